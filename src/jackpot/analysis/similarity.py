"""Mask similarity: per-layer Jaccard overlap |A ∩ B| / |A ∪ B| between two tickets."""
from __future__ import annotations

from pathlib import Path

from ..errors import JackpotError
from ..procedures import procedure
from ..sparse import Masks
from ..store import find_run


def resolve_mask(ref: str, store=None) -> Masks:
    """A mask from RUN[:LEVEL] (lottery; default the last finished level), RUN (pai: its mask;
    sparse: its final mask) or a mask file path."""
    if Path(ref).is_file():
        return Masks.load(ref, advice="give a mask.pt a run wrote, or RUN[:LEVEL]")
    name, _, level = ref.partition(":")
    if level and not level.isdigit():
        raise JackpotError(f"{ref!r}: the level after ':' must be a whole number, e.g. {name}:2")
    run = find_run(name, store)
    path = procedure(run.config().kind).mask_path(run, int(level) if level else None)
    if not path.exists():
        raise JackpotError(f"no mask at {path}")
    return Masks.load(path)


def mask_similarity(a: Masks, b: Masks) -> list[dict]:
    common = [n for n in a if n in b]
    if not common:
        raise JackpotError("the two masks share no parameter name")
    rows = []
    for n in common:
        if a[n].shape != b[n].shape:
            raise JackpotError(f"{n} has shape {tuple(a[n].shape)} in one mask and {tuple(b[n].shape)} in the other")
        inter, union = int((a[n] & b[n]).sum()), int((a[n] | b[n]).sum())
        rows.append({"name": n, "jaccard": inter / union if union else 1.0, "kept_a": int(a[n].sum()),
                     "kept_b": int(b[n].sum()), "both": inter,
                     # what two independent random masks of these densities would share, for reference
                     "random_jaccard": _random_jaccard(a[n].float().mean().item(), b[n].float().mean().item())})
    return rows


def _random_jaccard(p: float, q: float) -> float:
    both = p * q
    return both / (p + q - both) if p + q - both > 0 else 1.0


def format_similarity(rows: list[dict], name_a: str, name_b: str) -> str:
    lines = [f"mask overlap (Jaccard) of {name_a} and {name_b}",
             f"{'layer':<28} {'kept A':>9} {'kept B':>9} {'both':>9} {'Jaccard':>8} {'random':>8}"]
    for r in rows:
        lines.append(f"{r['name']:<28} {r['kept_a']:>9,} {r['kept_b']:>9,} {r['both']:>9,} "
                     f"{r['jaccard']:>8.3f} {r['random_jaccard']:>8.3f}")
    return "\n".join(lines)
