"""What a training costs, for train.json's `cost`: trainable parameters, step time, peak memory.

- `trainable_params`: the denoiser's parameters that get gradients (the adapter's; a trained
  token's row lives in a text encoder and is not counted).
- `step_s`: the median wall time of an optimizer step, from the trainer's per-step callback (the
  first step, which warms caches, is left out when there are others).
- `peak_mb`: on a GPU, torch's own `max_memory_allocated` over the training (reset at its start):
  everything allocated, model included. On the CPU, where torch keeps no such counter, the growth
  of the process's resident high-water mark over the resident size at the start (Linux: the mark
  is reset through /proc/self/clear_refs, as `benchmarks/common.py` does): what the training added
  on top of the loaded pipeline. `memory` names which one it is.
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import torch


def _status_mb(key: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"{key}:\s+(\d+)", text)
    return int(m.group(1)) / 1024 if m else None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class CostMeter:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks: list[float] = []
        self.params = 0
        self.rss0 = None
        self.reset = False

    def start(self, model) -> None:
        """Called once the adapter is on `model`, before the first step."""
        self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.reset = _reset_rss_peak()
            self.rss0 = _status_mb("VmRSS")
        self.marks = [time.perf_counter()]

    def step(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())

    def result(self) -> dict:
        steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        timed = steps[1:] or steps
        out = {"trainable_params": int(self.params), "step_s": round(statistics.median(timed), 5) if timed else None,
               "steps_timed": len(timed)}
        if self.cuda:
            out.update(peak_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1), memory="cuda max_memory_allocated")
        else:
            peak = _status_mb("VmHWM")
            grown = peak - self.rss0 if self.reset and peak is not None and self.rss0 is not None else None
            out.update(peak_mb=None if grown is None else round(max(grown, 0.0), 1),
                       memory="cpu resident high-water growth" if grown is not None else "unavailable")
        return out
