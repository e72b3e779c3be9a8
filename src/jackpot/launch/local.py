"""Run independent runs (e.g. one per seed) in a local process pool.

Each worker process gets its own torch thread count; the default of one thread per worker avoids
oversubscribing the cores (OpenMP threads spinning on a busy machine cost far more than they give).
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

import torch

from .sweep import execute


def _init_worker(threads: int) -> None:
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


# --- the sweep launcher -------------------------------------------------------------------------

def _die_with_parent(parent_pid: int) -> None:
    """Linux: ask the kernel to SIGTERM this process when its parent dies (even by SIGKILL), so a
    killed sweep leaves no orphan workers behind (the interrupted run resumes next time)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def _init_sweep_worker(threads: int, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    _init_worker(threads)


class LocalLauncher:
    """A process pool of `workers` processes with `threads` torch threads each.

    Runs are handed out one at a time (capacity = workers), so a run found busy returns its slot
    at once. On CUDA machines with several GPUs, runs go round-robin over the devices."""

    wait_busy = False

    def __init__(self, workers: int = 1, threads: int = 1):
        self.workers, self.threads = max(1, workers), max(1, threads)
        self.capacity = self.workers
        self.pool = None
        self.futures: dict = {}
        self._next = 0

    def device_for(self, device: str, name: str) -> str:
        if device == "cuda":
            n = torch.cuda.device_count()
            if n > 1:
                self._next += 1
                return f"cuda:{self._next % n}"
        return device

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                        initializer=_init_sweep_worker, initargs=(self.threads, os.getpid()))

    def submit(self, jobs: list[dict]) -> None:
        for job in jobs:
            try:
                fut = self.pool.submit(execute, job)
            except BrokenProcessPool:  # a worker died (its runs came back failed): fresh pool
                self.close(kill=True)
                self.start()
                fut = self.pool.submit(execute, job)
            self.futures[fut] = job["name"]

    def wait(self, timeout: float) -> list[dict]:
        if not self.futures:
            time.sleep(timeout)
            return []
        done, _ = wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            name = self.futures.pop(fut)
            try:
                out.append(fut.result())
            except Exception as e:  # the worker process died (killed, out of memory...)
                out.append({"name": name, "status": "failed", "summary": f"{type(e).__name__}: {e}",
                            "error": f"worker process failed: {type(e).__name__}: {e}"})
        return out

    def close(self, kill: bool = False) -> None:
        if self.pool is None:
            return
        if kill:
            for p in list((getattr(self.pool, "_processes", None) or {}).values()):
                try:
                    p.terminate()
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self.pool.shutdown(wait=False, cancel_futures=True)
        else:
            self.pool.shutdown(wait=True)
        self.pool = None
