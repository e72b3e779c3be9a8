"""Pruning by scores: layerwise or global, by fraction of the remaining weights or to a density.

Keep the highest scores. Already-pruned weights score -inf, so masks are monotone: a weight
pruned at one level stays pruned at every later one. Ties are broken by position (earlier index
kept) through a stable sort, so the result is deterministic.
"""
from __future__ import annotations

import math

import torch

from .masks import Masks, keep_count, top_k
from .prunable import layer_of


def scores_magnitude(model: torch.nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs() for n in masks}


def _masked(scores: dict[str, torch.Tensor], masks: Masks) -> dict[str, torch.Tensor]:
    return {n: torch.where(m, scores[n].float(), torch.tensor(float("-inf"), device=m.device)).flatten()
            for n, m in masks.items()}


def keep_top_groups(scores: dict[str, torch.Tensor], masks: Masks,
                    groups: list[tuple[list[str], int]]) -> Masks:
    """For each (names, k) group, keep the k best scores of those tensors ranked together.
    The building block of every pruning rule."""
    flat = _masked(scores, masks)
    out = {}
    for names, k in groups:
        keep = top_k(torch.cat([flat[n] for n in names]), k)  # earliest index first among ties
        offset = 0
        for n in names:
            out[n] = keep[offset: offset + masks[n].numel()].view(masks[n].shape)
            offset += masks[n].numel()
    return Masks({n: out[n] for n in masks})  # preserve the layer order


def keep_top(scores: dict[str, torch.Tensor], masks: Masks, layer_k: dict[str, int],
             global_k: int | None = None) -> Masks:
    """Keep layer_k[n] weights of each listed layer, and the global_k best of all other layers
    together."""
    groups = [([n], k) for n, k in layer_k.items()]
    pooled = [n for n in masks if n not in layer_k]
    if pooled:
        groups.append((pooled, global_k or 0))
    return keep_top_groups(scores, masks, groups)


def channel_count(k: int, shape) -> int:
    """The whole output channels a count of k weights of a conv weight of `shape` rounds to."""
    return keep_count(k / math.prod(shape), shape[0])


def keep_top_channels(scores: dict[str, torch.Tensor], masks: Masks, layer_k: dict[str, int]) -> Masks:
    """Like keep_top with one count per layer, but a conv weight (out, in, *kernel) keeps whole
    output channels: layer_k[n] rounded to channels (nearest, halves up, as keep_count), the
    channels of highest summed score (float64 sums; earliest channel among ties). Other layers keep
    their layer_k[n] best weights."""
    out = Masks()
    for n, k in layer_k.items():
        m = masks[n]
        if m.dim() < 3:
            out.update(keep_top_groups(scores, Masks({n: m}), [([n], k)]))
            continue
        per_channel = scores[n].detach().double().cpu().masked_fill(~m.cpu(), 0.0).flatten(1).sum(1)
        kept = top_k(per_channel, channel_count(k, m.shape))
        out[n] = kept.view(-1, *[1] * (m.dim() - 1)).expand(m.shape).to(m.device) & m
    return Masks({n: out[n] for n in masks if n in out})


ROUNDINGS = ("nearest", "floor-drop", "ceil-drop", "openlth")


def drop_count(fraction: float, n: int, rounding: str = "nearest", ignored: int = 0) -> int:
    """How many of n weights pruning `fraction` of them removes:
    nearest     n - keep_count(1 - fraction, n) (jackpot's one rounding of kept counts);
    floor-drop  int(fraction * n), the MNIST-1D notebook's `get_mask`;
    ceil-drop   ceil(fraction * n);
    openlth     OpenLTH's `sparse_global` exactly: k = ceil(fraction * (n + ignored)), where `ignored`
                counts the remaining weights of the layers pruning leaves alone (its mask still
                holds them), then threshold = sorted |w|[k] and `|w| > threshold` kept, so k + 1
                weights go (ties aside)."""
    if rounding == "floor-drop":
        return min(n, int(math.floor(fraction * n)))
    if rounding == "ceil-drop":
        return min(n, int(math.ceil(fraction * n)))
    if rounding == "openlth":
        return min(n, int(math.ceil(fraction * (n + ignored))) + 1)
    return n - keep_count(1.0 - fraction, n)


def prune(scores: dict[str, torch.Tensor], masks: Masks, fraction: float, scope: str = "layerwise",
          layer_fractions: dict[str, float] | None = None, rounding: str = "nearest",
          schedule: str = "geometric", level: int = 1, ignored: int = 0) -> Masks:
    """Remove the lowest scores of each group: one group per tensor (layerwise), per layer's
    weight and bias together (layerwise-joint) or all tensors together (global).

    `layer_fractions` maps a parameter or layer name to its own fraction; those parameters are
    pruned on their own at that rate whatever the scope (e.g. the LTH output layer at half rate).
    geometric schedule: a group of `active` weights drops drop_count(f, active) of them;
    linear schedule: at `level` a group of `size` entries keeps size - drop_count(level * f, size)
    (never more than are still active, so masks stay monotone). `ignored` (rounding openlth,
    global pool): remaining weights of layers kept dense, which OpenLTH counts in its k.
    """
    groups, rates = prune_groups(list(masks), fraction, scope, layer_fractions)
    plan = []
    for key, names in groups.items():
        active = sum(int(masks[n].sum()) for n in names)
        size = sum(masks[n].numel() for n in names)
        plan.append((names, kept_count(active, size, rates[key], rounding, schedule, level,
                                       ignored if key == "" else 0)))
    return keep_top_groups(scores, masks, plan)


def prune_groups(names: list[str], fraction: float, scope: str,
                 layer_fractions: dict[str, float] | None = None) -> tuple[dict[str, list[str]], dict[str, float]]:
    """The groups `prune` ranks together and each group's fraction: "" is the global pool,
    "own:NAME" a tensor with its own rate, a layer name a layerwise-joint group."""
    overrides = layer_fractions or {}
    groups: dict[str, list[str]] = {}
    rates: dict[str, float] = {}
    for n in names:
        own = overrides.get(n, overrides.get(layer_of(n)))
        key = n if scope == "layerwise" else ("" if scope == "global" else layer_of(n))
        key = f"own:{n}" if own is not None else key
        groups.setdefault(key, []).append(n)
        rates[key] = fraction if own is None else own
    return groups, rates


def kept_count(active: int, size: int, fraction: float, rounding: str = "nearest", schedule: str = "geometric",
               level: int = 1, ignored: int = 0) -> int:
    """Weights a group of `size` entries, `active` of them unpruned, keeps at `level`."""
    if schedule == "linear":
        return min(active, size - drop_count(min(1.0, level * fraction), size, rounding))
    return active - drop_count(fraction, active, rounding, ignored)


def prune_to_density(scores: dict[str, torch.Tensor], masks: Masks, density: float,
                     scope: str = "layerwise") -> Masks:
    """Keep exactly keep_count(density, N) of each layer's N weights (layerwise) or of all of
    them (global), highest scores first, never reviving a pruned weight."""
    if scope == "global":
        return keep_top(scores, masks, {}, min(masks.count(), keep_count(density, masks.size())))
    return keep_top(scores, masks, {n: min(int(m.sum()), keep_count(density, m.numel()))
                                    for n, m in masks.items()})
