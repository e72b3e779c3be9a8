"""Figures, and log-scale axes that carry enough labelled ticks to be read.

Figures are matplotlib `Figure` objects, not pyplot's: drawing one sets no global backend and
leaves nothing open, so importing jackpot in a notebook changes nothing there.

Matplotlib's log locator labels only whole decades, so a FLOPs axis spanning 0.1-0.5 or a density
axis spanning 5-60% shows one or two numbers. Here the ticks are 1-2-5 steps inside the data,
then 1-2-3-5 and 1-9 steps when those are too few, widened by the nearest ticks outside when still too few.
"""
from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

MIN_TICKS = 4


def new_figure(*grid: int, figsize: tuple[float, float], **kw):
    """(figure, axes): a figure of `figsize` inches with `fig.subplots(*grid, **kw)`."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # its own renderer: PNG and PDF without pyplot's global state
    return fig, fig.subplots(*grid, **kw)


def log_ticks(values, min_ticks: int = MIN_TICKS) -> list[float]:
    """At least `min_ticks` round tick positions covering the positive finite `values`."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        vals = [1.0]
    lo, hi = min(vals), max(vals)
    decades = range(math.floor(math.log10(lo)) - 1, math.floor(math.log10(hi)) + 2)
    for mantissas in ((1, 2, 5), (1, 2, 3, 5), range(1, 10)):
        ticks = sorted(float(f"{m * 10.0 ** k:.12g}") for k in decades for m in mantissas)
        inside = [t for t in ticks if lo / 1.05 <= t <= hi * 1.05]
        if len(inside) >= min_ticks:
            return inside
    below = [t for t in ticks if t < lo / 1.05]
    above = [t for t in ticks if t > hi * 1.05]
    while len(inside) < min_ticks and (below or above):
        # bracket the data first, then take the outside tick closest to it (in log space)
        need_above = above and inside and inside[-1] < hi
        need_below = below and inside and inside[0] > lo
        closer_above = above and (not below or math.log(above[0] / hi) <= math.log(lo / below[-1]))
        if need_above or (closer_above and not need_below):
            inside.append(above.pop(0))
        else:
            inside.insert(0, below.pop())
    return inside


def log_axis(ax, which: str, values) -> list[float]:
    """Put axis `which` ('x' or 'y') of `ax` on a log scale labelled at `log_ticks(values)`, with view
    limits that show every tick. An inverted axis stays inverted. Returns the ticks."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    ticks = log_ticks(values)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    lo, hi = min(ticks + vals) / 1.15, max(ticks + vals) * 1.15
    inverted = ax.xaxis_inverted() if which == "x" else ax.yaxis_inverted()
    (ax.set_xlim if which == "x" else ax.set_ylim)((hi, lo) if inverted else (lo, hi))
    return ticks
