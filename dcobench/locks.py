"""File locks that let several processes share one run folder.

Two `dcobench run` processes (or two `--shard`s, or Ray tasks) on one folder split the work and
never write the same file. Locks live in `OUT/.locks/` and are taken in one order, so no two
processes wait on each other:

    unit-<key>     a unit (a training and its cells, `plan.Unit`): who works on it now
    cell-<id>      one cell: sampled, scored and recorded by one process; the finished check is
                   repeated under it, so a cell is run exactly once
    train-<id>     one LoRA: trained by one process; the others wait, then find train.json
    merge-<id>     one merged LoRA

They are `filelock` locks: `flock` on a local disk, released by the kernel when a process dies,
so a killed run never leaves a folder locked. On a network file system, use `--shard` with one
folder per machine (or Ray) unless it supports `flock` (NFSv4 and Lustre do; some mounts do not).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from filelock import FileLock, Timeout

from .store import writing


class Locks:
    def __init__(self, root: str | Path):
        self.folder = Path(root) / ".locks"

    def lock(self, kind: str, name: str) -> FileLock:
        return FileLock(str(self.folder / f"{kind}-{name}.lock"))

    @contextlib.contextmanager
    def hold(self, kind: str, name: str, wait: bool = True):
        """Hold the lock for the block; yields True, or False at once when `wait` is off and another
        process holds it."""
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.lock(kind, name)
        try:
            with writing(self.folder):
                lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
