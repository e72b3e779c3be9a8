"""Pruning by scores: layerwise or global, by fraction of the remaining weights or to a density.

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


def _masked(scores: dict[str, torch.Tensor], masks: Masks) -> dict[str, torch.Tensor]:
    return {n: torch.where(m, scores[n].float(), torch.tensor(float("-inf"), device=m.device)).flatten()
            for n, m in masks.items()}


def keep_top(scores: dict[str, torch.Tensor], masks: Masks, layer_k: dict[str, int],
             global_k: int | None = None) -> Masks:
    """Keep layer_k[n] weights of each listed layer, and the global_k best of all other layers
    together. The building block of every pruning rule."""
    flat = _masked(scores, masks)
    out = {n: _top(flat[n], k).view(masks[n].shape) for n, k in layer_k.items()}
    pooled = [n for n in masks if n not in layer_k]
    if pooled:
        keep = _top(torch.cat([flat[n] for n in pooled]), global_k or 0)
        offset = 0
        for n in pooled:
            out[n] = keep[offset: offset + masks[n].numel()].view(masks[n].shape)
            offset += masks[n].numel()
    return Masks({n: out[n] for n in masks})  # preserve the layer order


def prune(scores: dict[str, torch.Tensor], masks: Masks, fraction: float, scope: str = "layerwise",
          layer_fractions: dict[str, float] | None = None) -> Masks:
    """Remove `fraction` of the remaining weights (the lowest scores).

    `layer_fractions` maps a parameter or layer name to its own fraction; those parameters are
    pruned layerwise at that rate even when `scope` is global (e.g. the LTH output layer at half
    rate). Each layer keeps exactly keep_count(1 - fraction, active) weights.
    """
    overrides = layer_fractions or {}
    rate = {n: overrides.get(n, overrides.get(layer_of(n))) for n in masks}
    layerwise = {n: fraction if rate[n] is None else rate[n] for n in masks
                 if scope == "layerwise" or rate[n] is not None}
    layer_k = {n: keep_count(1.0 - f, int(masks[n].sum())) for n, f in layerwise.items()}
    pooled_active = sum(int(m.sum()) for n, m in masks.items() if n not in layer_k)
    return keep_top(scores, masks, layer_k, keep_count(1.0 - fraction, pooled_active))


def prune_to_density(scores: dict[str, torch.Tensor], masks: Masks, density: float,
                     scope: str = "layerwise") -> Masks:
    """Keep exactly keep_count(density, N) of each layer's N weights (layerwise) or of all of
    them (global), highest scores first, never reviving a pruned weight."""
    if scope == "global":
        return keep_top(scores, masks, {}, min(masks.count(), keep_count(density, masks.size())))
    return keep_top(scores, masks, {n: min(int(m.sum()), keep_count(density, m.numel()))
                                    for n, m in masks.items()})
