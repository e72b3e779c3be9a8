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
        rows.append(row)
    order = method_order([r["method"] for r in rows])
    rows.sort(key=lambda r: (r["setting"], order.index(r["method"]), -r["target_density"]))
    return rows


def method_order(methods) -> list[str]:
    def key(m):
        base = m.split(" (")[0].split("/")[0].split(" lr=")[0]
        rank = next((i for i, name in enumerate(METHOD_ORDER) if m.startswith(name) or base == name),
                    len(METHOD_ORDER))
        return (m != "dense" and not m.startswith("dense "), rank, m)
    return sorted(set(methods), key=key)
