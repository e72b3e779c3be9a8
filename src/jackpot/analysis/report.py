"""`jackpot report`: tables, figures and an offline HTML page from a store or a sweep record.

Every finished result becomes a *point*: one (run, arm, level) for lottery runs, one run for pai
and sparse runs. A point's method label is `sparse.method (distribution)` for sparse runs,
`pai.score/pai.budget` for pai runs, `IMP <arm>` for each lottery arm; config fields that differ
between the reported runs (other than seed, density and the method fields) are appended to the
label (`rigl (erk) lr=0.1`). Points are grouped per dataset/model, method and target density, and
aggregated over seeds (diverged runs are counted, `2 of 3, 1 diverged`, but never averaged in; ±
is the sample standard deviation, and a single seed prints just its value). Every figure gives a
method the same colour and marker. Dynamic sparse runs also get a figure of their mask updates
(drop fraction, and the fraction of weights ever active, at each update).
"""
from __future__ import annotations

import csv
import html
import json
import math
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from ..config import canonical
from ..errors import JackpotError
from ..procedures import procedure
from ..sparse import Masks
from ..store import Run, list_runs, make_dirs, read_json, stage_done, writing
from ..train.loop import read_metrics
from .axes import log_axis
from .stats import mean_std
from .summary import count_cell, method_label, run_summary

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "8", "H"]
DENSE_COLOUR = "#000000"
# methods in a fixed order: they take palette slots in this order, the rest follow alphabetically
METHOD_ORDER = ["rigl", "set", "snfs", "dsr", "static", "gmp", "small-dense", "IMP ticket", "IMP reinit",
                "IMP random", "IMP clean", "snip", "grasp", "synflow", "magnitude", "random"]
SKIP_FIELDS = {"seed", "sparse.method", "sparse.distribution", "sparse.density", "pai.score", "pai.budget",
               "pai.density", "pai.invert", "data.dataset", "model.model", "kind"}


# --- collecting points ----------------------------------------------------------------------------

def resolve_source(source: str | Path) -> tuple[list[Run], str]:
    """(runs, title) of a store directory or a sweep record (file or directory)."""
    path = Path(source)
    record = None
    if path.suffix == ".json" and path.is_file():
        record = path
    elif path.is_dir() and path.with_suffix(".json").is_file() and path.parent.name == "sweeps":
        record = path.with_suffix(".json")
    if record is not None:
        from ..launch.sweep import Sweep
        sweep = Sweep.load(record)
        runs = [Run(p) for p in sweep.run_paths() if (p / "config.json").exists()]
        return runs, f"sweep {sweep.name}"
    if not path.is_dir():
        raise JackpotError(f"{source}: no such store directory or sweep record")
    runs = list_runs(path)
    if not runs:
        raise JackpotError(f"{source}: no runs there (give a store directory or <store>/sweeps/NAME.json)")
    return runs, f"store {path}"


def _flat(canon: dict) -> dict:
    out = {}
    for k, v in canon.items():
        if isinstance(v, dict):
            out.update({f"{k}.{f}": x for f, x in v.items()})
        else:
            out[k] = v
    return out


def _metrics(path: Path) -> list[dict]:
    return read_metrics(path)


def _stage_point(done: Path, base: dict) -> dict:
    rec = read_json(done, "stage record")
    rows = _metrics(done.parent / "metrics.jsonl")
    return {**base, "final_acc": rec["final"]["test_acc"], "best_acc": rec["best"].get("test_acc"),
            "best_epoch": rec["best"].get("epoch"), "diverged": bool(rec.get("diverged")),
            "curve": [(r["epoch"], r["test_acc"]) for r in rows if "test_acc" in r],
            "mask_updates": rec.get("mask_updates") or [], "stage": str(done.parent)}


def collect(runs: list[Run]) -> list[dict]:
    """One dict per finished result: setting, method, density, seed, accuracies, curve, layers."""
    infos = []
    for run in runs:
        try:
            cfg = run.config()
        except JackpotError:
            continue
        infos.append((run, cfg, _flat(canonical(cfg))))
    # a field that differs between runs of one method (an lr grid...) goes into its label
    groups = defaultdict(list)
    for run, cfg, flat in infos:
        groups[(cfg.kind, cfg.data.dataset, cfg.model.model, _base_method(cfg))].append(flat)
    varying = {}
    for key, flats in groups.items():
        keys = {k for flat in flats for k in flat} - SKIP_FIELDS
        varying[key] = sorted(k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1)
    points = []
    for run, cfg, flat in infos:
        suffix = "".join(f" {k.split('.')[-1]}={flat.get(k, 'default')}"
                         for k in varying[(cfg.kind, cfg.data.dataset, cfg.model.model, _base_method(cfg))])
        base = {"run": run.path.name, "kind": cfg.kind, "seed": cfg.seed,
                "setting": f"{_dataset_label(cfg.data.dataset)} / {cfg.model.model}"}
        if procedure(cfg.kind).levels:
            points += _lottery_points(run, cfg, base, suffix)
            continue
        done = run.stage("train", "done.json")
        summary = run_summary(run)  # None while unfinished, or when its stage or summary is damaged
        if summary is None:
            continue
        method = method_label(cfg)
        target = cfg.pai.density if cfg.kind == "pai" else (1.0 if cfg.sparse.method == "dense" else cfg.sparse.density)
        point = _stage_point(done, {**base, "method": method + suffix, "target": target,
                                    "density": summary["density"], "layers": summary.get("layers") or []})
        if "train_flops_ratio" in summary:
            point["train_flops"] = summary["train_flops_ratio"]
            point["inference_flops"] = summary["inference_flops_ratio"]
        points.append(point)
    return points


def _dataset_label(name: str) -> str:
    return f"npz:{Path(name[4:]).name}" if name.startswith("npz:") else name


def _base_method(cfg) -> str:
    if cfg.kind == "sparse":
        return cfg.sparse.method
    if cfg.kind == "pai":
        return f"{cfg.pai.score}/{cfg.pai.budget}"
    return "IMP"


def _lottery_points(run: Run, cfg, base: dict, suffix: str) -> list[dict]:
    out = []
    for level_dir in sorted(run.path.glob("level_*")):
        level = int(level_dir.name.split("_")[1])
        layers = []
        if (level_dir / "mask.pt").exists():
            try:
                layers = Masks.load(level_dir / "mask.pt").report()
            except Exception:  # noqa: BLE001 - a corrupt mask only loses its figure
                layers = []
        for done in sorted(level_dir.glob("*/done.json")):
            if not stage_done(done.parent):  # its record or files damaged: a re-run recomputes it
                continue
            arm = done.parent.name
            rec_density = read_json(done, "stage record").get("density", 1.0)
            out.append(_stage_point(done, {**base, "method": f"IMP {arm}{suffix}", "level": level,
                                           "target": round(rec_density, 4), "density": rec_density,
                                           "layers": layers if arm == "ticket" else []}))
    return out


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


def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("final_mean", "final_std", "best_mean", "best_std", "weights_remaining"):
        return f"{100 * value:.2f}"
    if key in ("train_flops", "inference_flops"):
        return f"{value:.4f}"
    if key == "best_epoch":
        return f"{value:.2f}"
    if key == "target_density":
        return f"{value:g}"
    return str(value)


def _cell(r: dict, key: str) -> str:
    if key in ("final_std", "best_std") and r["n"] < 2:
        return ""  # no sample standard deviation of fewer than two values
    return _fmt(key, r.get(key))


def _mean_pm(r: dict, stat: str) -> str:
    """`61.62 ± 0.40`; one seed: `61.62`; every seed diverged: `diverged`."""
    if r["n"] == 0:
        return "diverged"
    mean = _fmt(f"{stat}_mean", r[f"{stat}_mean"])
    return mean if r["n"] == 1 else f"{mean} ± {_fmt(f'{stat}_std', r[f'{stat}_std'])}"


def write_csv(rows: list[dict], path: Path) -> None:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([k for k, _ in cols])
        for r in rows:
            w.writerow([_cell(r, k) for k, _ in cols])


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


# --- figures --------------------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: Path, stem: str) -> list[Path]:
    fig.tight_layout()
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    _plt().close(fig)
    return paths


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)


def plot_accuracy(rows: list[dict], style: dict, out: Path, setting: str, stem: str, x: str) -> list[Path] | None:
    """Test accuracy vs weights remaining (x='density') or vs training FLOPs (x='flops')."""
    plt = _plt()
    rows = [r for r in rows if r["setting"] == setting and r["n"] > 0]
    if x == "flops":
        rows = [r for r in rows if "train_flops" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
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


def _subplot_grid(n: int):
    plt = _plt()
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
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
    plt = _plt()
    fig, (drop_ax, seen_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
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

def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise JackpotError("--tensorboard needs the tensorboard package: pip install 'jackpot[tb]'") from None
    return SummaryWriter


def write_tensorboard(points: list[dict], directory: str | Path) -> int:
    SummaryWriter = _summary_writer()
    n = 0
    for p in points:
        stage = Path(p["stage"])
        rel = stage.relative_to(stage.parents[1] if p["kind"] == "lottery" else stage.parent)
        writer = SummaryWriter(log_dir=str(Path(directory) / p["run"] / rel))
        for row in _metrics(stage / "metrics.jsonl"):
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(k, v, row["step"])
        writer.add_text("method", f"{p['method']} density {p['target']:g} seed {p['seed']}")
        writer.close()
        n += 1
    return n


# --- the report -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def write_report(source: str | Path, out: str | Path, tensorboard: str | Path | None = None) -> Path:
    runs, title = resolve_source(source)
    points = collect(runs)
    if not points:
        raise JackpotError(f"{source}: no finished results to report yet")
    if tensorboard:
        _summary_writer()  # not installed: one line before anything is written
    out = _output_dir(Path(out))  # a file in the way, a read-only file system: one line, nothing written
    if tensorboard:
        write_tensorboard(points, _output_dir(Path(tensorboard)))
    with writing(out):  # a full disk while writing the report: one line
        _write_files(out, title, points)
    return out


def _output_dir(path: Path) -> Path:
    """Create an output directory and prove it takes files before the report writes into it."""
    make_dirs(path)
    with writing(path):
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    return path


def _write_files(out: Path, title: str, points: list[dict]) -> None:
    rows = aggregate(points)
    write_csv(rows, out / "results.csv")
    md = format_markdown(rows)
    (out / "results.md").write_text(f"# Results ({title})\n\n{md}")
    style = styles(p["method"] for p in points)
    figures = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        s = _slug(setting)
        for caption, paths in [
            ("Test accuracy vs weights remaining", plot_accuracy(rows, style, out, setting, f"accuracy_vs_weights_{s}",
                                                                 "density")),
            ("Test accuracy vs training FLOPs", plot_accuracy(rows, style, out, setting, f"accuracy_vs_flops_{s}",
                                                              "flops")),
            ("Per-layer density", plot_layers(points, style, out, setting, f"layer_density_{s}")),
            ("Training curves", plot_curves(points, style, out, setting, f"training_curves_{s}")),
            ("Mask updates", plot_mask_updates(points, style, out, setting, f"mask_updates_{s}")),
        ]:
            if paths:
                figures.append((f"{caption} ({setting})", paths))
    (out / "points.json").write_text(json.dumps([{k: v for k, v in p.items()
                                                  if k not in ("curve", "layers", "mask_updates")}
                                                 for p in points], indent=1))
    _write_html(out, title, rows, figures)


def _write_html(out: Path, title: str, rows: list[dict], figures) -> None:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r, k))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    figs = "".join(
        f'<figure><img src="{html.escape(png.name)}" alt="{html.escape(caption)}">'
        f'<figcaption>{html.escape(caption)} — <a href="{html.escape(pdf.name)}">PDF</a></figcaption></figure>'
        for caption, (png, pdf) in figures)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jackpot report: {html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}td:nth-child(-n+2){{text-align:left}}
figure{{margin:1.5em 0}}img{{max-width:100%;border:1px solid #eee}}</style></head>
<body><h1>jackpot report</h1><p>{html.escape(title)}: {len(rows)} groups. Accuracies in %, mean and sample
standard deviation over seeds (diverged runs counted, never averaged in). Tables: <a href="results.csv">CSV</a>,
<a href="results.md">Markdown</a>.</p>
<table><tr>{head}</tr>{body}</table>{figs}</body></html>
"""
    (out / "index.html").write_text(page)

