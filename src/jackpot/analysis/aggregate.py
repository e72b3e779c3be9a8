"""Aggregating points: rows per (dataset/model, method, target density) with mean, sample
standard deviation and count over seeds; diverged runs are counted, never averaged in. Table rows
and figures are drawn from these same rows (and points)."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from .stats import mean_std

# methods in a fixed order: they take palette slots in this order, the rest follow alphabetically
METHOD_ORDER = ["rigl", "set", "snfs", "dsr", "static", "gmp", "small-dense", "IMP ticket", "IMP reinit",
                "IMP random", "IMP clean", "snip", "grasp", "synflow", "magnitude", "random"]
# --- aggregation ----------------------------------------------------------------------------------

def aggregate(points: list[dict]) -> list[dict]:
    """Rows per (setting, method, target density): mean/std/count over seeds."""
    groups = defaultdict(list)
    for p in points:
        groups[(p["setting"], p["method"], p["target"])].append(p)
    rows = []
    for (setting, method, target), ps in groups.items():
        ok = [p for p in ps if not p["diverged"]]
        fm, fs = mean_std([p["final_acc"] for p in ok])
        bm, bs = mean_std([p["best_acc"] for p in ok if p["best_acc"] is not None])
        row = {"setting": setting, "method": method, "target_density": target,
               "weights_remaining": statistics.fmean(p["density"] for p in ps),
               "n": len(ok), "diverged": len(ps) - len(ok), "seeds": sorted({p["seed"] for p in ps}),
               "final_mean": fm, "final_std": fs, "best_mean": bm, "best_std": bs,
               "best_epoch": statistics.fmean(p["best_epoch"] for p in ok) if ok else math.nan}
        flops = [p["train_flops"] for p in ok if "train_flops" in p]
        if flops:
            row["train_flops"] = statistics.fmean(flops)
            row["inference_flops"] = statistics.fmean(p["inference_flops"] for p in ok)
        times = [p["step_seconds"] for p in ok if p.get("step_seconds")]
        if times and len(times) == len(ok):
            row["step_seconds"] = statistics.fmean(times)
            # a run that measured its own masked-dense reference in the same process (sparse
            # execution) gives its ratio directly; the others are compared with the setting's dense run
            refs = [p["step_seconds"] / p["reference_step_seconds"] for p in ok if p.get("reference_step_seconds")]
            if len(refs) == len(ok):
                row["time_ratio"] = statistics.fmean(refs)
                row["time_baseline"] = "its masked reference"
        rows.append(row)
    _time_ratios(rows)
    order = method_order([r["method"] for r in rows])
    rows.sort(key=lambda r: (r["setting"], order.index(r["method"]), -r["target_density"]))
    return rows


def _time_ratios(rows: list[dict]) -> None:
    """Measured wall-clock per training step as a multiple of the dense run's of the same setting
    (`time_ratio`, beside the FLOPs ratio): what sparsity really bought on the machine that ran it."""
    dense = {r["setting"]: r["step_seconds"] for r in rows
             if (r["method"] == "dense" or r["method"].startswith("dense ")) and r.get("step_seconds")}
    for r in rows:
        if "time_ratio" not in r and r.get("step_seconds") and r["setting"] in dense:
            r["time_ratio"] = r["step_seconds"] / dense[r["setting"]]
            r["time_baseline"] = "the dense run"


def method_order(methods) -> list[str]:
    def key(m):
        base = m.split(" (")[0].split("/")[0].split(" lr=")[0]
        rank = next((i for i, name in enumerate(METHOD_ORDER) if m.startswith(name) or base == name),
                    len(METHOD_ORDER))
        return (m != "dense" and not m.startswith("dense "), rank, m)
    return sorted(set(methods), key=key)
