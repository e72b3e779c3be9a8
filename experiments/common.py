"""Shared helpers of the study scripts: run configs in a process pool, read results, tabulate."""
from __future__ import annotations

import sys
from pathlib import Path

from jackpot.analysis import stats
from jackpot.analysis.lottery_report import level_results
from jackpot.analysis.summary import run_summary
from jackpot.launch.local import run_parallel
from jackpot.procedures import run_job
from jackpot.store import Run


def run_all(cfgs, store: str, workers: int = 2) -> list[Run]:
    paths = run_parallel(run_job, [(c, store, "cpu") for c in cfgs], workers=workers, threads=1)
    return [Run(p) for p in paths]


def final_acc(run: Run, level: int | None = None, arm: str = "ticket") -> tuple[float, float]:
    """(weights remaining, final test accuracy) of a single-stage run or of one lottery level/arm."""
    if level is None:
        s = run_summary(run)
        return s["density"], s["final"]["test_acc"]
    row = level_results(run)[level]
    return row["density"], row["acc"][arm]


def mean_std(values: list[float]) -> str:
    m, s = stats.mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def seeds_arg(default: str = "0,1,2") -> list[int]:
    for a in sys.argv[1:]:
        if a.startswith("--seeds="):
            return [int(s) for s in a.split("=", 1)[1].split(",")]
    return [int(s) for s in default.split(",")]


def store_arg(default: str) -> str:
    for a in sys.argv[1:]:
        if a.startswith("--store="):
            return a.split("=", 1)[1]
    return default


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> str:
    text = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text
