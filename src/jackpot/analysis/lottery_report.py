"""Tables and plots of lottery runs: accuracy of each arm vs weights remaining, over seeds."""
from __future__ import annotations

import statistics
from pathlib import Path

from ..store import Run, read_json

ARM_STYLE = {  # one fixed colour and marker per arm across every figure
    "ticket": ("#1f77b4", "o", "winning ticket (IMP)"),
    "reinit": ("#d62728", "s", "random reinit"),
    "random": ("#2ca02c", "^", "random mask"),
    "clean": ("#9467bd", "D", "ticket, clean data"),
}


def level_results(run: Run) -> list[dict]:
    """Per finished level: level, density, and each finished arm's final test accuracy."""
    rows = []
    for level_path in sorted(run.path.glob("level_*")):
        ticket = level_path / "ticket" / "done.json"
        if not ticket.exists():
            break
        row = {"level": int(level_path.name.split("_")[1]),
               "density": read_json(ticket, "stage record")["density"], "acc": {}, "best": {}}
        for arm_done in sorted(level_path.glob("*/done.json")):
            rec = read_json(arm_done, "stage record")
            row["acc"][arm_done.parent.name] = rec["final"]["test_acc"]
            row["best"][arm_done.parent.name] = rec["best"]["test_acc"]
        rows.append(row)
    return rows


def aggregate(runs: list[Run]) -> list[dict]:
    """Mean, std and count over runs (seeds) per level and arm, up to the levels all runs finished."""
    per_run = [level_results(r) for r in runs]
    n_levels = min((len(rows) for rows in per_run), default=0)
    out = []
    for level in range(n_levels):
        rows = [rows[level] for rows in per_run]
        arms = {}
        for arm in ARM_STYLE:
            values = [r["acc"][arm] for r in rows if arm in r["acc"]]
            if values:
                arms[arm] = {"mean": statistics.fmean(values), "n": len(values),
                             "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        out.append({"level": level, "density": statistics.fmean(r["density"] for r in rows), "arms": arms})
    return out


def format_table(rows: list[dict]) -> str:
    """A Markdown table: level, weights remaining, mean ± std of each arm's test accuracy."""
    arms = [a for a in ARM_STYLE if any(a in r["arms"] for r in rows)]
    head = "| level | weights remaining | " + " | ".join(ARM_STYLE[a][2] for a in arms) + " |"
    lines = [head, "|" + "---|" * (2 + len(arms))]
    for r in rows:
        cells = []
        for a in arms:
            s = r["arms"].get(a)
            cells.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} (n={s['n']})" if s else "–")
        lines.append(f"| {r['level']} | {100 * r['density']:.1f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Test accuracy vs weights remaining (log x), one colour per arm, bands of ±1 std."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, (colour, marker, label) in ARM_STYLE.items():
        pts = [(100 * r["density"], r["arms"][arm]) for r in rows if arm in r["arms"]]
        if arm != "ticket" and rows and arm not in rows[0]["arms"]:  # controls start from the dense point
            pts = [(100 * rows[0]["density"], rows[0]["arms"]["ticket"])] + pts
        if not pts:
            continue
        xs = [p[0] for p in pts]
        mean = [100 * p[1]["mean"] for p in pts]
        std = [100 * p[1]["std"] for p in pts]
        ax.plot(xs, mean, color=colour, marker=marker, label=label)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=colour, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%) [log scale]")
    ax.set_ylabel("test accuracy (%)")
    n = max((s["n"] for r in rows for s in r["arms"].values()), default=0)
    ax.set_title(title or f"Lottery tickets: mean ± std over {n} seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)
             if rows and min(100 * r["density"] for r in rows) * 0.9 <= t <= 100]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
