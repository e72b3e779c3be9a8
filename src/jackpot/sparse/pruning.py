"""Pruning by scores: layerwise or global, with per-layer rate overrides.

Keep the highest scores. Already-pruned weights score -inf, so masks are monotone: a weight
pruned at one level stays pruned at every later one. Ties are broken by position (earlier index
kept) through a stable sort, so the result is deterministic.
"""
from __future__ import annotations

import torch

from .masks import Masks, keep_count
from .prunable import layer_of


def scores_magnitude(model: torch.nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs() for n in masks}


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k highest entries of a flat tensor, earliest index first among ties."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        order = torch.argsort(scores, descending=True, stable=True)
        keep[order[:k]] = True
    return keep


def prune(scores: dict[str, torch.Tensor], masks: Masks, fraction: float, scope: str = "layerwise",
          layer_fractions: dict[str, float] | None = None) -> Masks:
    """Remove `fraction` of the remaining weights (the lowest scores).

    `layer_fractions` maps a parameter or layer name to its own fraction; those parameters are
    pruned layerwise at that rate even when `scope` is global (e.g. the LTH output layer at half
    rate). Each layer keeps exactly keep_count(1 - fraction, active) weights.
    """
    overrides = layer_fractions or {}
    rate = {n: overrides.get(n, overrides.get(layer_of(n))) for n in masks}
    masked_scores = {n: torch.where(masks[n], scores[n].float(), torch.tensor(float("-inf"), device=scores[n].device))
                     for n in masks}
    new = Masks()
    global_names = []
    for n, m in masks.items():
        if scope == "layerwise" or rate[n] is not None:
            f = fraction if rate[n] is None else rate[n]
            k = keep_count(1.0 - f, int(m.sum()))
            new[n] = _top(masked_scores[n].flatten(), k).view(m.shape)
        else:
            global_names.append(n)
    if global_names:
        flat = torch.cat([masked_scores[n].flatten() for n in global_names])
        k = keep_count(1.0 - fraction, sum(int(masks[n].sum()) for n in global_names))
        keep = _top(flat, k)
        offset = 0
        for n in global_names:
            size = masks[n].numel()
            new[n] = keep[offset: offset + size].view(masks[n].shape)
            offset += size
    return Masks({n: new[n] for n in masks})  # preserve the layer order
