"""Shared benchmark helpers: one thread, interleaved repetitions, ratios of medians per round.
Calls are timed by jackpot.sparse.timing (synchronized on CUDA, like export and `jackpot bench`)."""
from __future__ import annotations

import random
import statistics
from typing import Callable

import torch

from jackpot.sparse.timing import seconds_per_call


def setup_threads(n: int = 1) -> None:
    torch.set_num_threads(n)


def option(argv: list[str], name: str, default: str) -> str:
    """The value after `name` in argv (`--device cuda`), else default."""
    return argv[argv.index(name) + 1] if name in argv else default


def interleaved_ratio(candidates: dict[str, Callable[[], None]], baseline: str, rounds: int,
                      reps: int, seed: int = 0, device=None) -> dict[str, dict]:
    """Time each candidate `reps` times per round, candidates in random order each round.

    Returns per candidate the median seconds per call and the median over rounds of
    (t_candidate / t_baseline) with its interquartile range: same-round ratios cancel the drift
    of a shared, noisy machine.
    """
    rng = random.Random(seed)
    times = {k: [] for k in candidates}
    for _ in range(rounds):
        order = list(candidates)
        rng.shuffle(order)
        for name in order:
            times[name].append(seconds_per_call(candidates[name], reps, device))
    out = {}
    for name, ts in times.items():
        ratios = sorted(t / b for t, b in zip(ts, times[baseline]))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[name] = {"seconds": statistics.median(ts), "ratio": statistics.median(ratios),
                     "iqr": (q[0], q[2])}
    return out
