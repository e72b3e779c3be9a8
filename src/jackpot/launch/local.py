"""Run independent runs (e.g. one per seed) in a local process pool.

Each worker process gets its own torch thread count; the default of one thread per worker avoids
oversubscribing the cores (OpenMP threads spinning on a busy machine cost far more than they give).
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def run_parallel(fn: Callable, items: Sequence, workers: int = 1, threads: int = 1) -> list:
    """[fn(item) for item in items], in `workers` processes (in this process when workers <= 1).

    `fn` must be a module-level function (it is pickled). Results come back in input order;
    the first exception is re-raised here.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        return list(pool.map(fn, items))
