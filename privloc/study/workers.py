"""Independent cached computations side by side: one process per core, each on one thread.

Each job fills a cache entry (privloc.artifacts); the caller then reads the entries as if it had computed them
itself. A job computed on one thread can differ from a two-thread run of it by rounding. On the 2-core machine
the notebooks were measured on, the gain is small: four attacked states of a default victim took 26.7 s side by
side against 29.0 s one after the other on two threads, nine localisations 114 s against 124 s (each worker
imports torch and rebuilds its candidate sets first).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

Job = tuple[Callable, tuple, dict]


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def threads(n: int | None):
    """torch's CPU thread count set to `n` (None: unchanged) inside the block."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _call(fn: Callable, args: tuple, kwargs: dict) -> None:
    fn(*args, **kwargs)


def run_jobs(jobs: Sequence[Job], on_cpu: bool, desc: str, progress: bool = True, workers: int | None = None) -> None:
    """Run every job, `workers` (default: one per core) processes at a time on a CPU; in this process otherwise.

    Jobs must be picklable (module-level functions, plain arguments): a spawned worker imports privloc afresh.
    """
    workers = min(workers or cores(), len(jobs))
    if not jobs:
        return
    if not on_cpu or workers == 1:
        for fn, args, kwargs in tqdm(jobs, desc=desc, disable=not progress, leave=False):
            fn(*args, **kwargs)
        return
    # spawn, not fork: a forked child would inherit torch's thread pool in whatever state the parent left it.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as pool:
        futures = [pool.submit(_call, fn, args, kwargs) for fn, args, kwargs in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} ({workers} at a time)",
                           disable=not progress, leave=False):
            future.result()
