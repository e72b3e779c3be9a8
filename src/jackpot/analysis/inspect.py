"""`jackpot inspect`: what a budget does to a model at a density, layer by layer (and FLOPs)."""
from __future__ import annotations

import torch

from ..flops import layer_flops
from ..models import create_model, is_vgg, model_info
from ..sparse import Masks, prunable_names
from ..sparse.distributions import counts_from_densities, layer_densities
from ..sparse.pruning import keep_top, scores_magnitude


def inspect_budget(model_name: str, budget: str, density: float, input_shape=None, num_classes=None,
                   keep_first=False, keep_output=False, keep_layers=(), include_bias=False,
                   flops=False, seed: int = 0) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(model_name, input_shape, num_classes)
    names = prunable_names(model, keep_first, keep_output, list(keep_layers), include_bias)
    params = dict(model.named_parameters())
    full = Masks.ones_for(model, names)
    if budget == "global":  # global ranking of |w| at initialisation (data-free)
        counts = keep_top(scores_magnitude(model, full), full, {}, round(density * full.size())).layer_counts()
    else:
        densities = layer_densities(budget, model, names, density, vgg_style=is_vgg(model_name))
        counts = counts_from_densities(densities, {n: params[n].shape for n in names})
    layers = [{"name": n, "shape": list(params[n].shape), "params": params[n].numel(),
               "density": counts[n] / params[n].numel(), "nnz": counts[n]} for n in names]
    total_params = sum(r["params"] for r in layers)
    out = {"model": model_name, "budget": budget, "target_density": density, "layers": layers,
           "total": {"params": total_params, "nnz": sum(r["nnz"] for r in layers),
                     "density": sum(r["nnz"] for r in layers) / total_params}}
    if flops:
        masks = Masks({n: _mask_with_count(params[n], counts[n]) for n in names})
        shape = input_shape or _default_shape(model_name)
        rows = {r["name"]: r for r in layer_flops(model, shape, masks)}
        for r in layers:
            f = rows.get(r["name"].rpartition(".")[0])
            r["flops"], r["flops_dense"] = (f["sparse"], f["dense"]) if f else (0, 0)
        dense = sum(r["dense"] for r in rows.values())
        sparse = sum(r["sparse"] for r in rows.values())
        out["total"].update({"flops": sparse, "flops_dense": dense, "flops_ratio": sparse / dense})
    return out


def _mask_with_count(p: torch.Tensor, k: int) -> torch.Tensor:
    """FLOPs depend only on the count per layer, so any positions do."""
    m = torch.zeros(p.numel(), dtype=torch.bool)
    m[:k] = True
    return m.view(p.shape)


def _default_shape(name: str):
    return model_info(name).default_input_shape


def format_inspect(info: dict) -> str:
    has_flops = "flops" in info["total"]
    head = f"{'layer':<28} {'shape':<18} {'params':>10} {'density':>8} {'kept':>10}"
    head += f" {'FLOPs':>12}" if has_flops else ""
    lines = [f"{info['model']}, budget {info['budget']}, target density {info['target_density']:g}", head]
    for r in info["layers"]:
        line = (f"{r['name']:<28} {'x'.join(map(str, r['shape'])):<18} {r['params']:>10,} "
                f"{100 * r['density']:>7.2f}% {r['nnz']:>10,}")
        lines.append(line + (f" {r['flops']:>12.3e}" if has_flops else ""))
    t = info["total"]
    line = f"{'total':<28} {'':<18} {t['params']:>10,} {100 * t['density']:>7.2f}% {t['nnz']:>10,}"
    lines.append(line + (f" {t['flops']:>12.3e}" if has_flops else ""))
    if has_flops:
        lines.append(f"inference FLOPs per example: {t['flops']:.3e} sparse, {t['flops_dense']:.3e} dense "
                     f"({t['flops_ratio']:.3f}x); multiply-add = 2 FLOPs, conv/linear only (RigL appendix H)")
    return "\n".join(lines)
