"""Tables of single-stage runs (pai, sparse): accuracy and cost, mean ± std over seeds.

± is the sample standard deviation (n - 1 in the denominator); one seed prints just its value.
A run whose training diverged is counted (`2 of 3, 1 diverged`) but never averaged in.
"""
from __future__ import annotations

import statistics

from ..procedures import procedure
from ..store import Run, read_json, stage_done
from .stats import mean_std


def run_summary(run: Run) -> dict | None:
    """summary.json of a finished run; None while unfinished, or when the training stage it was
    built from, or the summary itself, is damaged (a re-run recomputes both)."""
    path = run.stage("summary.json")
    if not path.exists() or not stage_done(run.stage("train")):
        return None
    summary = read_json(path, "run summary")
    whole = isinstance(summary, dict) and "density" in summary and "test_acc" in (summary.get("final") or {})
    return summary if whole else None


def method_label(cfg) -> str:
    """The method of a run as every table, listing and report names it (its procedure decides:
    `rigl (erk)`, `rigl (erk) 5x`, `gmp`, `snip/global`, `IMP`)."""
    return procedure(cfg.kind).label(cfg)


def run_diverged(run: Run) -> bool:
    """Whether the run's training stage diverged (its done.json says so)."""
    done = run.stage("train", "done.json")
    return done.exists() and bool(read_json(done, "stage record").get("diverged"))


def _stat(values: list[float]) -> str:
    if not values:
        return "diverged"
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def count_cell(n: int, of: int) -> str:
    """`3`, or `2 of 3, 1 diverged` when some runs diverged."""
    return str(n) if n == of else f"{n} of {of}, {of - n} diverged"


def format_summary_table(runs: list[Run], label: str) -> str:
    """One row: the label, weights remaining, test accuracy, and FLOPs ratios when known."""
    finished = [(s, run_diverged(r)) for r, s in ((r, run_summary(r)) for r in runs) if s]
    if not finished:
        return "(no finished runs)"
    sums = [s for s, _ in finished]
    ok = [s for s, diverged in finished if not diverged]
    acc = [s["final"]["test_acc"] for s in ok]
    density = statistics.fmean(s["density"] for s in sums)
    cols = ["method", "weights remaining", "test accuracy (%)", "n"]
    cells = [label, f"{100 * density:.1f}%", _stat(acc), count_cell(len(ok), len(sums))]
    if "train_flops_ratio" in sums[0]:
        cost = ok or sums
        cols += ["train FLOPs (x dense)", "inference FLOPs (x dense)"]
        cells += [f"{statistics.fmean(s['train_flops_ratio'] for s in cost):.3f}",
                  f"{statistics.fmean(s['inference_flops_ratio'] for s in cost):.3f}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), "| " + " | ".join(cells) + " |"]
    if len(acc) > 1:
        lines += ["", "± : sample standard deviation over seeds."]
    return "\n".join(lines)
