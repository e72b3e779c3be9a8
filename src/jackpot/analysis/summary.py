"""Tables of single-stage runs (pai, sparse): accuracy and cost, mean ± std over seeds."""
from __future__ import annotations

import statistics

from ..store import Run, read_json


def run_summary(run: Run) -> dict | None:
    path = run.stage("summary.json")
    return read_json(path, "run summary") if path.exists() else None


def _stat(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def format_summary_table(runs: list[Run], label: str) -> str:
    """One row: the label, weights remaining, test accuracy, and FLOPs ratios when known."""
    sums = [s for s in (run_summary(r) for r in runs) if s]
    if not sums:
        return "(no finished runs)"
    acc = [s["final"]["test_acc"] for s in sums]
    density = statistics.fmean(s["density"] for s in sums)
    cols = ["method", "weights remaining", "test accuracy (%)", "n"]
    cells = [label, f"{100 * density:.1f}%", _stat(acc), str(len(sums))]
    if "train_flops_ratio" in sums[0]:
        cols += ["train FLOPs (x dense)", "inference FLOPs (x dense)"]
        cells += [f"{statistics.fmean(s['train_flops_ratio'] for s in sums):.3f}",
                  f"{statistics.fmean(s['inference_flops_ratio'] for s in sums):.3f}"]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), "| " + " | ".join(cells) + " |"])
