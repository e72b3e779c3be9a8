"""Tables and plots of lottery runs: accuracy of each arm vs weights remaining, over seeds.

A stage whose training diverged is counted but never averaged in: its cell says `n=2 of 3,
1 diverged`. ± is the sample standard deviation over seeds (n - 1 in the denominator).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from ..store import Run, read_json, stage_done
from .axes import log_axis, new_figure
from .stats import mean_std

ARM_STYLE = {  # one fixed colour and marker per arm across every figure
    "ticket": ("#1f77b4", "o", "winning ticket (IMP)"),
    "reinit": ("#d62728", "s", "random reinit"),
    "random": ("#2ca02c", "^", "random mask"),
    "clean": ("#9467bd", "D", "ticket, clean data"),
}


def level_results(run: Run) -> list[dict]:
    """Per finished level: level, density, and each finished arm's final test accuracy (and whether
    its training diverged)."""
    rows = []
    for level_path in sorted(run.path.glob("level_*")):
        ticket = level_path / "ticket" / "done.json"
        if not stage_done(ticket.parent):  # unfinished, or its files lost or damaged since
            break
        row = {"level": int(level_path.name.split("_")[1]),
               "density": read_json(ticket, "stage record")["density"], "acc": {}, "best": {}, "diverged": {}}
        for arm_done in sorted(level_path.glob("*/done.json")):
            if not stage_done(arm_done.parent):
                continue
            rec = read_json(arm_done, "stage record")
            row["acc"][arm_done.parent.name] = rec["final"]["test_acc"]
            row["best"][arm_done.parent.name] = rec["best"]["test_acc"]
            row["diverged"][arm_done.parent.name] = bool(rec.get("diverged"))
        rows.append(row)
    return rows


def aggregate(runs: list[Run]) -> list[dict]:
    """Mean, std and count over runs (seeds) per level and arm, up to the levels all runs finished;
    diverged stages are left out of the mean and std and counted in `diverged` (`of` = all)."""
    per_run = [level_results(r) for r in runs]
    n_levels = min((len(rows) for rows in per_run), default=0)
    out = []
    for level in range(n_levels):
        rows = [rows[level] for rows in per_run]
        arms = {}
        for arm in ARM_STYLE:
            present = [r for r in rows if arm in r["acc"]]
            values = [r["acc"][arm] for r in present if not r.get("diverged", {}).get(arm)]
            if present:
                mean, std = mean_std(values)
                arms[arm] = {"mean": mean, "n": len(values), "std": std,
                             "of": len(present), "diverged": len(present) - len(values)}
        out.append({"level": level, "density": statistics.fmean(r["density"] for r in rows), "arms": arms})
    return out


def format_table(rows: list[dict]) -> str:
    """A Markdown table: level, weights remaining, mean ± std of each arm's test accuracy."""
    arms = [a for a in ARM_STYLE if any(a in r["arms"] for r in rows)]
    head = "| level | weights remaining | " + " | ".join(ARM_STYLE[a][2] for a in arms) + " |"
    lines = [head, "|" + "---|" * (2 + len(arms))]
    for r in rows:
        cells = [format_cell(r["arms"][a]) if a in r["arms"] else "–" for a in arms]
        lines.append(f"| {r['level']} | {100 * r['density']:.1f}% | " + " | ".join(cells) + " |")
    if any(s["n"] > 1 for r in rows for s in r["arms"].values()):
        lines += ["", "± : sample standard deviation over seeds."]
    return "\n".join(lines)


def format_cell(s: dict) -> str:
    """`61.6 ± 0.4 (n=3)`; one seed: `61.6 (n=1)`; diverged seeds counted, never averaged in."""
    of = s.get("of", s["n"])
    if s["n"] == 0:
        return f"diverged (n=0 of {of})"
    count = f"n={s['n']}" + (f" of {of}, {s['diverged']} diverged" if s.get("diverged") else "")
    value = f"{100 * s['mean']:.1f}" + (f" ± {100 * s['std']:.1f}" if s["n"] > 1 else "")
    return f"{value} ({count})"


def plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Test accuracy vs weights remaining (log x), one colour per arm, bands of ±1 std."""
    fig = figure(rows, title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def figure(rows: list[dict], title: str = ""):
    """The matplotlib figure of `plot` (arms that were not trained are not drawn)."""
    fig, ax = new_figure(figsize=(6.4, 4.2))
    for arm, (colour, marker, label) in ARM_STYLE.items():
        pts = [(100 * r["density"], r["arms"][arm]) for r in rows if arm in r["arms"] and r["arms"][arm]["n"]]
        if not pts:  # an arm no level trained (e.g. `clean` without --corrupt) gets no line or legend entry
            continue
        if arm != "ticket" and arm not in rows[0]["arms"] and rows[0]["arms"].get("ticket", {}).get("n"):
            pts = [(100 * rows[0]["density"], rows[0]["arms"]["ticket"])] + pts  # controls start dense
        xs = [p[0] for p in pts]
        mean = [100 * p[1]["mean"] for p in pts]
        std = [100 * p[1]["std"] for p in pts]
        ax.plot(xs, mean, color=colour, marker=marker, label=label)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=colour, alpha=0.2, linewidth=0)
    ax.invert_xaxis()
    log_axis(ax, "x", [100 * r["density"] for r in rows])
    ax.set_xlabel("weights remaining (%) [log scale]")
    ax.set_ylabel("test accuracy (%)")
    n = max((s["n"] for r in rows for s in r["arms"].values()), default=0)
    seeds = f": mean ± std over {n} seeds" if n > 1 else (": 1 seed" if n == 1 else "")  # one seed has no ±
    ax.set_title(title or f"Lottery tickets{seeds}")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig
