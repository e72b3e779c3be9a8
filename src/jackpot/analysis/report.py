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

One path, in three modules: points.py reads runs into points, aggregate.py turns points into rows,
render.py draws rows and points as tables and figures; this module writes them and the page.
"""
from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

from ..errors import JackpotError
from ..store import make_dirs, writing
from .aggregate import aggregate
from .points import collect, resolve_source
from .render import (COLUMNS, COST_COLUMNS, cell, format_cost_markdown, format_markdown, plot_accuracy,
                     plot_curves, plot_layers, plot_mask_updates, plot_speedup, require_tensorboard, styles,
                     write_csv, write_tensorboard)

# --- the report -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def write_report(source: str | Path, out: str | Path, tensorboard: str | Path | None = None) -> Path:
    runs, title = resolve_source(source)
    points = collect(runs)
    if not points:
        raise JackpotError(f"{source}: no finished results to report yet")
    if tensorboard:
        require_tensorboard()  # not installed: one line before anything is written
    if (Path(out) / "config.json").exists():
        raise JackpotError(f"-o {out} is a run directory: give the report a folder of its own")
    out = _output_dir(Path(out))  # a file in the way, a read-only file system: one line, nothing written
    if tensorboard:
        write_tensorboard(points, _output_dir(Path(tensorboard)))
    with writing(out):  # a full disk while writing the report: one line
        written = _write_files(out, title, points)
        _drop_stale(out, written)
    return out


MANIFEST = ".jackpot-report.json"  # the files the last report wrote here: its own, to replace


def _drop_stale(out: Path, written: set[str]) -> None:
    """Remove what an earlier report into `out` wrote and this one did not (figures of a setting
    no longer reported, a cost table of runs no longer timed); files it did not write stay."""
    path = out / MANIFEST
    try:
        before = set(json.loads(path.read_text())) if path.exists() else set()
    except (ValueError, TypeError):
        before = set()
    for name in sorted(before - written):
        if Path(name).name == name:  # a bare file name of the report's, never a path elsewhere
            (out / name).unlink(missing_ok=True)
    path.write_text(json.dumps(sorted(written)))


def _output_dir(path: Path) -> Path:
    """Create an output directory and prove it takes files before the report writes into it."""
    make_dirs(path)
    with writing(path):
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    return path


def _write_files(out: Path, title: str, points: list[dict]) -> set[str]:
    """Write the report; returns the names of the files written."""
    rows = aggregate(points)
    write_csv(rows, out / "results.csv")
    md = format_markdown(rows)
    (out / "results.md").write_text(f"# Results ({title})\n\n{md}")
    cost = format_cost_markdown(rows)  # apart from the results: times differ from run to run
    if cost:
        (out / "cost.md").write_text(f"# What training cost ({title})\n\n{cost}")
        write_csv(rows, out / "cost.csv", COST_COLUMNS)
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
            ("Measured vs FLOPs speedup", plot_speedup(rows, style, out, setting, f"speedup_{s}")),
        ]:
            if paths:
                figures.append((f"{caption} ({setting})", paths))
    (out / "points.json").write_text(json.dumps([{k: v for k, v in p.items()
                                                  if k not in ("curve", "layers", "mask_updates")}
                                                 for p in points], indent=1))
    _write_html(out, title, rows, figures)
    return ({"results.csv", "results.md", "points.json", "index.html"} | ({"cost.md", "cost.csv"} if cost else set())
            | {p.name for _, paths in figures for p in paths})


def _html_table(rows: list[dict], columns) -> str:
    cols = [c for c in columns if any(c[0] in r for r in rows)]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r, k))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _write_html(out: Path, title: str, rows: list[dict], figures) -> None:
    timed = [r for r in rows if "step_seconds" in r]
    cost = (f"<h2>What training cost</h2><p>Measured on the machine that ran each run: "
            f'<a href="cost.csv">CSV</a>, <a href="cost.md">Markdown</a>.</p>{_html_table(timed, COST_COLUMNS)}'
            if timed else "")
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
{_html_table(rows, COLUMNS)}{cost}{figs}</body></html>
"""
    (out / "index.html").write_text(page)
