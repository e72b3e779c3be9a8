"""Per-layer density budgets: how a target overall density is split over the masked parameters.

Every budget is solved on real-valued kept counts (sum d_l N_l = density * N). With exact=True (the
default) these are then rounded to whole weights by largest remainder so that the total is exactly
keep_count(density, N): the returned densities are count_l / N_l, and `counts_from_densities` gives
those counts back. exact=False returns the real solution (per-layer rounding then drifts the total
by up to half a weight per layer; "uniform" then gives every layer the very same density).

Fixed layers (first_dense, `custom`, smart ratio's linear layers, min_density) are set first; the
budget's rule solves the remaining ("free") layers for what is left of the target.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import JackpotError, check_fraction
from .masks import Masks, keep_count, random_positions, top_k
from .prunable import layer_of, weight_layers

_EPS = 1e-9


def _fail_unreachable(density: float, why: str) -> None:
    raise JackpotError(f"target density {density:g} cannot be met: {why}")


def _uniform(free, rest, info):
    d = rest / sum(info["sizes"][n] for n in free)
    return {n: d for n in free}


def _scaled(raw: dict[str, float], free, rest, info) -> dict[str, float]:
    """RigL's epsilon solve: d_l = eps * raw_l with sum d_l N_l = rest; any layer that would exceed
    density 1 is made dense and the others are re-solved (moving every offender at once gives the
    same fixed point as RigL's one-max-at-a-time loop, since eps only grows)."""
    sizes, dense = info["sizes"], set()
    while True:
        scaled = [n for n in free if n not in dense]
        left = rest - sum(sizes[n] for n in dense)
        if not scaled:
            return {n: 1.0 for n in free}
        eps = left / sum(raw[n] * sizes[n] for n in scaled)
        over = [n for n in scaled if eps * raw[n] > 1.0 + _EPS]
        if not over:
            return {n: (1.0 if n in dense else eps * raw[n]) for n in free}
        dense.update(over)


def _er(free, rest, info):
    # ER: (n_in + n_out) / (n_in * n_out) from the first two dims (PyTorch is OIHW: no kernel term).
    raw = {n: sum(info["shapes"][n][:2]) / math.prod(info["shapes"][n][:2]) for n in free}
    return _scaled(raw, free, rest, info)


def _erk(free, rest, info):
    # ERK (Evci et al.): sum of all dims over their product, optionally raised to a power (0 = uniform).
    raw = {n: (sum(info["shapes"][n]) / math.prod(info["shapes"][n])) ** info["erk_power_scale"] for n in free}
    return _scaled(raw, free, rest, info)


def _global(free, rest, info):
    scores = info["scores"]
    if scores is None:
        raise JackpotError("the global budget needs scores (name -> tensor)")
    missing = [n for n in free if n not in scores]
    if missing:
        raise JackpotError(f"the global budget has no scores for {', '.join(missing)}")
    keep = top_k(torch.cat([scores[n].detach().float().flatten().cpu() for n in free]), int(math.floor(rest + 0.5)))
    out, offset = {}, 0
    for n in free:
        out[n] = int(keep[offset: offset + info["sizes"][n]].sum()) / info["sizes"][n]
        offset += info["sizes"][n]
    return out


def _smart_ratio(free, rest, info):
    """Su et al. 2020 (pai.md 1.4): linear layers keep `linear_keep`; conv layer l of L (position among
    all conv/linear modules of the model) gets p_l = k * r_l, r_l = (L-l+1)^2 + (L-l+1), divided by l^2
    for VGG-style nets. k is solved in real numbers (the authors floor each term; the difference is a
    few weights). Clipped overflow goes to the following layers in order (authors' code) or, with
    redistribute="proportional", is re-solved over the unclipped layers like ERK.
    A network without conv layers (an MLP) has nothing to scale against the fixed linear ratio, so
    there every layer follows the formula (our extension; README section "Pruning at initialisation")."""
    sizes, kinds, pos, L = info["sizes"], info["kinds"], info["positions"], info["num_layers"]
    has_conv = any(k != "linear" for k in kinds.values())
    lin = [n for n in free if kinds[n] == "linear"] if has_conv else []
    conv = [n for n in free if n not in lin]
    out = {n: info["linear_keep"] for n in lin}
    rest -= sum(info["linear_keep"] * sizes[n] for n in lin)
    if not conv:
        if abs(rest) > 0.5:
            _fail_unreachable(info["density"], "smart ratio has no conv layer to take the remaining budget")
        return out
    if rest < -_EPS or rest > sum(sizes[n] for n in conv) + _EPS:
        _fail_unreachable(info["density"],
                          f"linear layers keep {info['linear_keep']:g}, leaving no feasible conv budget")
    raw = {}
    for n in conv:
        j = L - pos[n] + 1
        raw[n] = (j * j + j) / (pos[n] ** 2 if info["vgg_style"] else 1)
    if info["redistribute"] == "proportional":
        return {**out, **_scaled(raw, conv, rest, info)}
    if info["redistribute"] != "sequential":
        raise JackpotError(f"unknown redistribute {info['redistribute']!r}; valid: sequential, proportional")
    k = rest / sum(raw[n] * sizes[n] for n in conv)
    extra = 0.0  # kept weights a clipped layer could not hold, handed to the next layers in order
    for n in conv:
        d = k * raw[n] + extra / sizes[n]
        extra = max(0.0, (d - 1.0) * sizes[n])
        out[n] = min(1.0, d)
    if extra > 0.5:
        raise JackpotError(f"smart ratio: {extra:.0f} weights clipped at the last conv layers cannot be "
                           "redistributed sequentially; use redistribute='proportional'")
    return out


BUDGETS = {"uniform": _uniform, "uniform-first-dense": _uniform, "er": _er, "erk": _erk,
           "smart-ratio": _smart_ratio, "global": _global, "custom": _uniform}


def _kind(module: nn.Module) -> str:
    return "linear" if isinstance(module, nn.Linear) else "conv"


def layer_densities(budget: str, model: nn.Module, names: list[str], density: float, *, first_dense: bool = False,
                    linear_keep: float = 0.3, custom: dict[str, float] | None = None, erk_power_scale: float = 1.0,
                    scores: dict[str, torch.Tensor] | None = None, vgg_style: bool = False,
                    redistribute: str = "sequential", min_density: float = 0.0,
                    exact: bool = True) -> dict[str, float]:
    """Density per masked parameter so that the kept total equals `density` of all of them.

    `custom` maps layer or parameter names to fixed densities (any budget; "custom" solves the rest
    uniformly). `first_dense` keeps the first prunable layer dense. `min_density` raises any free layer
    the budget would leave below it to that floor and re-solves the others (layer-collapse guard).
    """
    if budget not in BUDGETS:
        raise JackpotError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    check_fraction(density, "target density")
    if not names:
        raise JackpotError("no parameters to distribute a density over")
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise JackpotError(f"the model has no parameter {', '.join(unknown)}")
    layers = weight_layers(model)
    modules = dict(model.named_modules())
    info = {"sizes": {n: params[n].numel() for n in names}, "shapes": {n: tuple(params[n].shape) for n in names},
            "kinds": {n: _kind(modules[layer_of(n)]) for n in names},
            "positions": {n: layers.index(layer_of(n)) + 1 if layer_of(n) in layers else 0 for n in names},
            "num_layers": len(layers), "scores": scores, "erk_power_scale": erk_power_scale,
            "linear_keep": linear_keep, "vgg_style": vgg_style, "redistribute": redistribute, "density": density}
    sizes = info["sizes"]
    fixed: dict[str, float] = {}
    if first_dense or budget == "uniform-first-dense":
        fixed.update({n: 1.0 for n in names if layer_of(n) == layer_of(names[0])})
    for key, d in (custom or {}).items():
        hit = [n for n in names if n == key or layer_of(n) == key]
        if not hit:
            valid = sorted({layer_of(n) for n in names}) + list(names)
            raise JackpotError(f"custom density names {key!r}, which is no masked layer or parameter "
                               f"(valid: {', '.join(valid)})")
        if not 0.0 <= d <= 1.0:
            raise JackpotError(f"custom density for {key} must be in [0, 1], got {d}")
        fixed.update({n: float(d) for n in hit})
    if budget == "custom" and not custom:
        raise JackpotError("the custom budget needs a custom map of layer -> density")
    target = density * sum(sizes.values())
    while True:
        free = [n for n in names if n not in fixed]
        rest = target - sum(fixed[n] * sizes[n] for n in fixed)
        room = sum(sizes[n] for n in free)
        if rest < -0.5 or rest > room + 0.5:
            what = ", ".join(n for n in fixed)
            _fail_unreachable(density, f"fixed layers ({what}) keep {target - rest:.0f} of {target:.0f} weights, "
                                       f"free layers can hold {room}")
        solved = BUDGETS[budget](free, min(max(rest, 0.0), room), info) if free else {}
        low = [n for n in free if solved[n] < min_density - _EPS]
        if not low:
            out = {n: fixed.get(n, solved.get(n)) for n in names}
            return _whole(out, sizes, keep_count(density, sum(sizes.values()))) if exact else out
        fixed.update({n: min_density for n in low})


def _whole(densities: dict[str, float], sizes: dict[str, int], total: int) -> dict[str, float]:
    """Round real kept counts to integers summing to `total` (largest remainder, earlier layer first
    among ties) and return them as densities count / N."""
    real = {n: min(1.0, max(0.0, d)) * sizes[n] for n, d in densities.items()}
    counts = {n: int(math.floor(r + 1e-6)) for n, r in real.items()}
    rem = sorted(real, key=lambda n: -(real[n] - counts[n]))
    short = total - sum(counts.values())
    for n in (rem if short > 0 else reversed(rem)):
        if short == 0:
            break
        step = 1 if short > 0 else -1
        if 0 <= counts[n] + step <= sizes[n]:
            counts[n] += step
            short -= step
    return {n: counts[n] / sizes[n] for n in densities}


def counts_from_densities(densities: dict[str, float], shapes: dict) -> dict[str, int]:
    """Kept weights per parameter with the project's one rounding rule; `shapes` maps a name to a
    shape or to its number of elements."""
    return {n: keep_count(min(1.0, max(0.0, d)), s if isinstance(s, int) else math.prod(s))
            for n, d in densities.items() for s in [shapes[n]]}


def random_masks(model: nn.Module, names: list[str], densities: dict[str, float],
                 generator: torch.Generator) -> Masks:
    """Uniformly random positions with exactly keep_count(d_l, N_l) weights kept per layer."""
    params = dict(model.named_parameters())
    counts = counts_from_densities({n: densities[n] for n in names}, {n: params[n].numel() for n in names})
    return Masks({n: random_positions(params[n].numel(), counts[n], generator).view(params[n].shape).to(params[n].device)
                  for n in names})


def budget_report(model: nn.Module, names: list[str], densities: dict[str, float],
                  target: float | None = None) -> dict:
    """Per-layer rows (name, shape, params, density, kept) plus the target and achieved density."""
    params = dict(model.named_parameters())
    counts = counts_from_densities({n: densities[n] for n in names}, {n: params[n].numel() for n in names})
    rows = [{"name": n, "shape": list(params[n].shape), "params": params[n].numel(),
             "density": counts[n] / params[n].numel(), "kept": counts[n]} for n in names]
    total = sum(r["params"] for r in rows)
    return {"layers": rows, "target": target, "achieved": sum(counts.values()) / total}


def check_collapse(counts: dict[str, int], allow: bool = False,
                   refusal: str = "layer collapse: {layers} would keep no weights "
                                  "(lower the sparsity, set a minimum layer density, or allow collapse)") -> None:
    """Refuse a budget or mask that prunes a whole layer away (it disconnects the network: SynFlow on
    ResNet shortcuts, Synaptic-Flow issue #7) unless explicitly allowed; `refusal` is the message,
    `{layers}` the emptied ones."""
    dead = [n for n, c in counts.items() if c == 0]
    if dead and not allow:
        raise JackpotError(refusal.format(layers=", ".join(dead)))
