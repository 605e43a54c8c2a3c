"""The Ray executor: one Ray core task per unit (a training and its cells).

`ray.init(address=...)` joins a cluster when `--ray-address` (`executor.address`) or `RAY_ADDRESS`
names one, and otherwise starts a local Ray instance (`--workers N` tasks at a time). Each task
asks for `executor.num_gpus` GPUs (default: 1 when the cluster has any) and `executor.num_cpus`
CPUs, opens the run's Context in its worker (kept there for the next task on CPU workers; a GPU
task gets a fresh worker, Ray's default, so a worker never keeps a GPU it was not given) and runs
the unit through `execute.run_unit`, under the folder's locks, exactly as the local executor does.
Every worker must see the run folder, the model and the data at the same paths (a shared file
system) and have dcobench installed.
"""

from __future__ import annotations

import logging
import os
import socket

from ..errors import DcoError
from ..execute import Context
from ..units import run_unit
from ..scoring import Scorer
from ..store import RunDir
from . import add, context_spec

_CONTEXTS: dict[str, Context] = {}  # per worker process: the Context of the run it last served


def unit_task(spec, unit, root: str, wait: bool, fail_fast: bool = False):
    """Runs in a Ray worker: one unit, with this worker's Context for the run."""
    from rich.progress import Progress

    key = repr(spec)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = Context.open(*spec)
    stats = run_unit(lambda: _CONTEXTS[key], unit, RunDir(root), Progress(disable=True), wait=wait, fail_fast=fail_fast)
    return None if stats is None else {**stats, "cells": len(unit.cells)}


def connect(cfg) -> bool:
    """Join the cluster at `cfg.address` / $RAY_ADDRESS, else start a local instance; True if started here."""
    try:
        import ray
    except ImportError:
        raise DcoError("--executor ray: Ray is not installed; pip install 'dcobench[ray]' (or use --executor local)")
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            msg = " ".join(str(e).split())[:200]
            raise DcoError(f"--ray-address {address}: cannot connect to a Ray cluster ({msg}); start one with "
                           "`ray start --head` and pass the address it prints")
    else:
        cpus = {"num_cpus": int(cfg.workers * cfg.num_cpus)} if cfg.workers else {}
        ray.init(include_dashboard=False, **cpus, **quiet)
    return True


def check_reachable(address: str) -> None:
    """A plain host:port must accept a connection: Ray itself retries an unreachable one for minutes."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise DcoError(f"--ray-address {address}: nothing answers there ({type(e).__name__}: {e}); start a cluster "
                       "with `ray start --head` and pass the address it prints (host:6379)")


def run_ray(plan, store, units, progress, on_cell) -> dict:
    cfg = plan.config.executor
    started = connect(cfg)
    import ray

    pending: dict = {}
    try:
        if plan.config.score.enabled:
            Scorer(plan.config.score, "cpu")  # missing weights fail here, before any task trains
        gpus = cfg.num_gpus if cfg.num_gpus >= 0 else float(ray.cluster_resources().get("GPU", 0) > 0)
        task = ray.remote(num_gpus=gpus, num_cpus=cfg.num_cpus)(unit_task)
        spec = ray.put(context_spec(plan))
        fail_fast = cfg.fail_fast
        pending = {task.remote(spec, unit, str(store.root), False, fail_fast): unit for unit in units}
        totals = {"trained": 0, "sampled": 0, "failed": []}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ref)
            try:
                stats = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, DcoError):
                    raise DcoError(str(cause)) from None
                raise
            if stats is None:  # another process is on this unit: wait for it in a task of its own
                pending[task.remote(spec, unit, str(store.root), True, fail_fast)] = unit
                continue
            for _ in range(stats.pop("cells")):
                on_cell()
            add(totals, stats)
        return totals
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
