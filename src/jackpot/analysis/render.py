"""Rendering aggregated rows and points: Markdown and CSV tables, figures (PNG and PDF, one
colour and marker per method in every figure), TensorBoard event files."""
from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..errors import JackpotError
from ..procedures import procedure
from ..train.loop import read_metrics
from .aggregate import method_order
from .axes import log_axis, new_figure
from .summary import count_cell

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "8", "H"]
DENSE_COLOUR = "#000000"
def styles(methods) -> dict[str, tuple[str, str]]:
    """One (colour, marker) per method, the same in every figure of a report."""
    out, i = {}, 0
    for m in method_order(methods):
        if m == "dense" or m.startswith("dense "):
            out[m] = (DENSE_COLOUR, "*")
            continue
        out[m] = (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
        i += 1
    return out


# --- tables ---------------------------------------------------------------------------------------

COLUMNS = [("setting", "dataset / model"), ("method", "method"), ("target_density", "density"),
           ("weights_remaining", "weights remaining (%)"), ("n", "n"), ("diverged", "diverged"),
           ("final_mean", "final test acc (%)"), ("final_std", "final std"), ("best_mean", "best test acc (%)"),
           ("best_std", "best std"), ("best_epoch", "best epoch"), ("train_flops", "train FLOPs (x dense)"),
           ("inference_flops", "inference FLOPs (x dense)")]
# What the runs cost on the machine that ran them: kept apart from the results, which are the same
# bits on every re-run, while times are not.
COST_COLUMNS = [("setting", "dataset / model"), ("method", "method"), ("target_density", "density"),
                ("n", "n"), ("train_flops", "train FLOPs (x dense)"),
                ("time_ratio", "measured time per step (x baseline)"), ("time_baseline", "baseline"),
                ("step_seconds", "time per step (ms)")]


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("final_mean", "final_std", "best_mean", "best_std", "weights_remaining"):
        return f"{100 * value:.2f}"
    if key in ("train_flops", "inference_flops", "time_ratio"):
        return f"{value:.4f}"
    if key == "step_seconds":
        return f"{1000 * value:.3f}"
    if key == "best_epoch":
        return f"{value:.2f}"
    if key == "target_density":
        return f"{value:g}"
    return str(value)


def cell(r: dict, key: str) -> str:
    if key in ("final_std", "best_std") and r["n"] < 2:
        return ""  # no sample standard deviation of fewer than two values
    return _fmt(key, r.get(key))


def _mean_pm(r: dict, stat: str) -> str:
    """`61.62 ± 0.40`; one seed: `61.62`; every seed diverged: `diverged`."""
    if r["n"] == 0:
        return "diverged"
    mean = _fmt(f"{stat}_mean", r[f"{stat}_mean"])
    return mean if r["n"] == 1 else f"{mean} ± {_fmt(f'{stat}_std', r[f'{stat}_std'])}"


# a column whose cells are written in another unit than its key says is named by that unit
CSV_HEADER = {"step_seconds": "step_ms"}


def write_csv(rows: list[dict], path: Path, columns=COLUMNS) -> None:
    cols = [c for c in columns if any(c[0] in r for r in rows)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([CSV_HEADER.get(k, k) for k, _ in cols])
        for r in rows:
            w.writerow([cell(r, k) for k, _ in cols])


def format_markdown(rows: list[dict]) -> str:
    lines = []
    has_flops = any("train_flops" in r for r in rows)
    for setting in dict.fromkeys(r["setting"] for r in rows):
        lines += [f"### {setting}", "",
                  "| method | density | weights remaining | final test acc (%) | best test acc (%) | best epoch | n |"
                  + (" train FLOPs (x dense) |" if has_flops else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if has_flops else "")]
        for r in (r for r in rows if r["setting"] == setting):
            cells = [r["method"], _fmt("target_density", r["target_density"]),
                     f"{100 * r['weights_remaining']:.2f}%", _mean_pm(r, "final"), _mean_pm(r, "best"),
                     _fmt("best_epoch", r["best_epoch"]), count_cell(r["n"], r["n"] + r["diverged"])]
            if has_flops:
                cells.append(_fmt("train_flops", r.get("train_flops")))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["± : sample standard deviation over seeds; diverged runs are counted in n, never averaged in.", ""]
    return "\n".join(lines)


def format_cost_markdown(rows: list[dict]) -> str | None:
    """Training FLOPs beside the measured time per step, both as a multiple of the setting's dense
    run; None when no run measured its steps."""
    rows = [r for r in rows if "step_seconds" in r]
    if not rows:
        return None
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        lines += [f"### {setting}", "", "| method | density | n | train FLOPs (x dense) | measured time per step "
                  "(x baseline) | baseline | time per step (ms) |", "|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["setting"] == setting):
            lines.append("| " + " | ".join([r["method"], _fmt("target_density", r["target_density"]), str(r["n"]),
                                           _fmt("train_flops", r.get("train_flops")),
                                           _fmt("time_ratio", r.get("time_ratio")), r.get("time_baseline", ""),
                                           _fmt("step_seconds", r["step_seconds"])]) + " |")
        lines.append("")
    lines += ["Measured on the machine that ran each run (median wall-clock of a training step; a run with "
              "a same-process masked reference is compared with it, the others with the setting's dense run).", ""]
    return "\n".join(lines)


# --- figures --------------------------------------------------------------------------------------

def _save(fig, out: Path, stem: str) -> list[Path]:
    fig.tight_layout()
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    return paths


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)


def plot_accuracy(rows: list[dict], style: dict, out: Path, setting: str, stem: str, x: str) -> list[Path] | None:
    """Test accuracy vs weights remaining (x='density') or vs training FLOPs (x='flops')."""
    rows = [r for r in rows if r["setting"] == setting and r["n"] > 0]
    if x == "flops":
        rows = [r for r in rows if "train_flops" in r]
    if not rows:
        return None
    fig, ax = new_figure(figsize=(7.2, 4.6))
    xs_all = []
    drawn = 0
    for method in method_order(r["method"] for r in rows):
        pts = sorted((r for r in rows if r["method"] == method),
                     key=lambda r: r["weights_remaining"] if x == "density" else r["train_flops"])
        colour, marker = style[method]
        xs = [100 * r["weights_remaining"] if x == "density" else r["train_flops"] for r in pts]
        mean = [100 * r["final_mean"] for r in pts]
        std = [100 * r["final_std"] for r in pts]
        n = max(r["n"] for r in pts)
        label = f"{method} (n={n})"
        if x == "density" and (method == "dense" or method.startswith("dense ")):
            m, s = statistics.fmean(mean), statistics.fmean(std)
            ax.axhline(m, color=colour, linestyle="--", linewidth=1.2, label=label)
            ax.axhspan(m - s, m + s, color=colour, alpha=0.08, linewidth=0)
            drawn += 1
            continue
        xs_all += xs
        ax.plot(xs, mean, color=colour, marker=marker, label=label, linewidth=1.5, markersize=6)
        ax.fill_between(xs, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                        color=colour, alpha=0.18, linewidth=0)
        drawn += 1
    if x == "density":
        ax.invert_xaxis()
        log_axis(ax, "x", xs_all or [100])
        ax.set_xlabel("weights remaining (%) [log scale]")
    else:
        log_axis(ax, "x", xs_all)
        ax.set_xlabel("training FLOPs (x dense training) [log scale]")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title(f"{setting}\nfinal test accuracy vs {'weights remaining' if x == 'density' else 'training FLOPs'}",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, drawn)
    return _save(fig, out, stem)


def plot_speedup(rows: list[dict], style: dict, out: Path, setting: str, stem: str) -> list[Path] | None:
    """Measured speedup (dense time per step / this run's) against the FLOPs speedup (dense training
    FLOPs / this run's), with the ideal line where the two agree: how much of the FLOPs saving the
    run's execution turned into time. The baseline is the run's own masked reference when it
    measured one (sparse execution), else the setting's dense run; the marker's label says which."""
    rows = [r for r in rows if r["setting"] == setting and r.get("time_ratio") and r.get("train_flops")
            and not (r["method"] == "dense" or r["method"].startswith("dense "))]
    if not rows:
        return None
    fig, ax = new_figure(figsize=(6.4, 4.6))
    xs = [1 / r["train_flops"] for r in rows]
    ys = [1 / r["time_ratio"] for r in rows]
    top = max(xs + ys + [1.0]) * 1.2
    ax.plot([1, top], [1, top], color="#999999", linestyle="--", linewidth=1, label="ideal (time follows FLOPs)")
    for method in method_order(r["method"] for r in rows):
        mine = [(r, x, y) for r, x, y in zip(rows, xs, ys) if r["method"] == method]
        colour, marker = style[method]
        base = {r.get("time_baseline", "") for r, _, _ in mine}
        label = method + (" (vs its masked reference)" if base == {"its masked reference"} else "")
        ax.scatter([x for _, x, _ in mine], [y for _, _, y in mine], color=colour, marker=marker, label=label,
                   zorder=3)
    log_axis(ax, "x", xs + [1.0])
    log_axis(ax, "y", ys + [1.0])
    ax.set_xlabel("FLOPs speedup of training (x dense) [log]")
    ax.set_ylabel("measured speedup per step (x baseline) [log]")
    ax.set_title(setting, fontsize=10)
    _legend(ax, len(rows))
    return _save(fig, out, stem)


def _subplot_grid(n: int):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = new_figure(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def plot_layers(points: list[dict], style: dict, out: Path, setting: str, stem: str) -> list[Path] | None:
    """Per-layer density of each method's final masks (seed-averaged), one panel per target density."""
    pts = [p for p in points if p["setting"] == setting and p.get("layers")]
    if not pts:
        return None
    targets = sorted({p["target"] for p in pts}, reverse=True)[:9]
    fig, axes = _subplot_grid(len(targets))
    for ax, target in zip(axes, targets):
        names, drawn = None, []
        for method in method_order(p["method"] for p in pts if p["target"] == target):
            ps = [p for p in pts if p["target"] == target and p["method"] == method]
            names = [row["name"] for row in ps[0]["layers"]]
            dens = [100 * statistics.fmean(p["layers"][i]["density"] for p in ps if len(p["layers"]) == len(names))
                    for i in range(len(names))]
            colour, marker = style[method]
            ax.plot(range(len(names)), dens, color=colour, marker=marker, label=method, linewidth=1.2)
            drawn += dens
        log_axis(ax, "y", drawn)
        ax.set_title(f"density {100 * target:g}%", fontsize=10)
        ax.set_xticks(range(len(names or [])))
        ax.set_xticklabels([n.replace(".weight", "") for n in names or []], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("weights kept in layer (%) [log]")
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, 1)
    fig.suptitle(f"{setting}: per-layer density of the final masks", fontsize=11)
    return _save(fig, out, stem)


def plot_curves(points: list[dict], style: dict, out: Path, setting: str, stem: str) -> list[Path] | None:
    """Test accuracy during training (mean over seeds), one panel per target density."""
    pts = [p for p in points if p["setting"] == setting and p["curve"] and not p["diverged"]]
    if not pts:
        return None
    targets = sorted({p["target"] for p in pts}, reverse=True)[:9]
    fig, axes = _subplot_grid(len(targets))
    for ax, target in zip(axes, targets):
        for method in method_order(p["method"] for p in pts if p["target"] == target):
            ps = [p for p in pts if p["target"] == target and p["method"] == method]
            by_epoch = defaultdict(list)
            for p in ps:
                for e, acc in p["curve"]:
                    by_epoch[e].append(acc)
            es = sorted(by_epoch)
            mean = [100 * statistics.fmean(by_epoch[e]) for e in es]
            colour, marker = style[method]
            ax.plot(es, mean, color=colour, marker=marker, markersize=4, label=f"{method} (n={len(ps)})",
                    linewidth=1.2)
        ax.set_title(f"density {100 * target:g}%", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        _legend(ax, 1)
    fig.suptitle(f"{setting}: training curves (mean over seeds)", fontsize=11)
    return _save(fig, out, stem)


def plot_mask_updates(points: list[dict], style: dict, out: Path, setting: str, stem: str) -> list[Path] | None:
    """Dynamic sparse runs: drop fraction and fraction of weights ever active at each mask update
    (mean over seeds), one line per method and density."""
    pts = [p for p in points if p["setting"] == setting and p.get("mask_updates")]
    if not pts:
        return None
    fig, (drop_ax, seen_ax) = new_figure(1, 2, figsize=(11, 4.2))
    for method in method_order(p["method"] for p in pts):
        colour, marker = style[method]
        for target in sorted({p["target"] for p in pts if p["method"] == method}, reverse=True):
            ps = [p for p in pts if p["method"] == method and p["target"] == target]
            for ax, key in ((drop_ax, "drop_fraction"), (seen_ax, "ever_active")):
                by_step = defaultdict(list)
                for p in ps:
                    for u in p["mask_updates"]:
                        if u.get(key) is not None:
                            by_step[u["step"]].append(u[key])
                steps = sorted(by_step)
                ax.plot(steps, [100 * statistics.fmean(by_step[s]) for s in steps], color=colour, marker=marker,
                        markersize=3, linewidth=1.2, label=f"{method} {100 * target:g}% (n={len(ps)})")
    drop_ax.set_ylabel("drop fraction (% of active weights)")
    seen_ax.set_ylabel("weights ever active (% of prunable)")
    for ax, title in ((drop_ax, "drop fraction per update"), (seen_ax, "weights ever active")):
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        _legend(ax, 1)
    fig.suptitle(f"{setting}: mask updates (mean over seeds)", fontsize=11)
    return _save(fig, out, stem)


# --- TensorBoard ----------------------------------------------------------------------------------

def require_tensorboard():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise JackpotError("--tensorboard needs the tensorboard package: pip install 'jackpot[tb]'") from None
    return SummaryWriter


def write_tensorboard(points: list[dict], directory: str | Path) -> int:
    SummaryWriter = require_tensorboard()
    n = 0
    for p in points:
        stage = Path(p["stage"])
        rel = stage.relative_to(stage.parents[1] if procedure(p["kind"]).levels else stage.parent)
        writer = SummaryWriter(log_dir=str(Path(directory) / p["run"] / rel))
        for row in read_metrics(stage / "metrics.jsonl"):
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(k, v, row["step"])
        writer.add_text("method", f"{p['method']} density {p['target']:g} seed {p['seed']}")
        writer.close()
        n += 1
    return n
