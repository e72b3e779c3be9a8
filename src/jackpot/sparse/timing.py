"""Timing of repeated calls that means the same on every device: the one clock export, `jackpot
bench` and bench/ use. On CUDA, kernels are queued and a call returns before it has run, so the
clock waits for the device (torch.cuda.synchronize) before it starts and before it stops: run
time, not launch time. torch.set_num_threads sets CPU threads only; it does not apply on a GPU.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch


def is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def threads_apply(device) -> bool:
    """Whether a CPU thread count governs work on `device` (only on the CPU)."""
    return device is None or torch.device(device).type == "cpu"


def seconds_per_call(fn: Callable[[], object], n: int = 1, device=None) -> float:
    """Mean seconds of `n` back-to-back calls of fn, work queued on `device` included."""
    if is_cuda(device):
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if is_cuda(device):
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n


def time_interleaved(fns: dict[str, Callable], rounds: int = 7, target_s: float = 2e-3,
                     seed: int = 0, device=None) -> dict[str, float]:
    """Median seconds per call of each fn: rounds in random order, each fn repeated to ~target_s."""
    reps = {}
    for k, fn in fns.items():
        fn()  # warm-up (allocations, MKL handles, CUDA kernels' first launch)
        reps[k] = max(1, min(200, int(target_s / max(seconds_per_call(fn, 1, device), 1e-7))))
    times = {k: [] for k in fns}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            times[k].append(seconds_per_call(fns[k], reps[k], device))
    return {k: statistics.median(v) for k, v in times.items()}
