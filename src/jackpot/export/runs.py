"""The trained sparse network of a run directory, rebuilt for export and benchmarking."""
from __future__ import annotations

import torch

from ..errors import JackpotError
from ..models import create_model, list_models
from ..procedures import procedure
from ..procedures.context import read_dataset_record
from ..sparse import Masks, prunable_names
from ..sparse.distributions import check_collapse, counts_from_densities, layer_densities, random_masks
from ..store import Run, load_weights, stage_done, stage_problem


def trained_sparse(run: Run, level: int | None = None, arm: str = "ticket") -> tuple[torch.nn.Module, Masks, dict]:
    """(model with the trained weights, its masks, arch) of a lottery level/arm (default: the last
    pruned level) or of a pai/sparse run's training stage."""
    cfg = run.config()
    if not procedure(cfg.kind).levels and (level is not None or arm != "ticket"):
        raise JackpotError(f"--level and --arm choose a lottery level and arm; a {cfg.kind} run has one trained "
                           "network: drop them")
    stage = procedure(cfg.kind).trained_stage(run, level, arm)
    dense = JackpotError(f"run {run.path.name} has no trained sparse network at {stage.relative_to(run.path)}")
    if not stage_done(stage):  # done.json, and the files it vouches for (a lost mask.pt too)
        raise JackpotError(f"stage {stage} has not finished training ({stage_problem(stage)}); re-run the "
                           "run's command to compute it")
    if not (stage / "mask.pt").exists():
        raise dense
    info = read_dataset_record(run.path)
    arch = {"name": cfg.model.model, "input_shape": tuple(info["input_shape"]), "num_classes": info["num_classes"]}
    model = create_model(arch["name"], arch["input_shape"], arch["num_classes"])
    load_weights(model, stage / "final.pt")
    return model, Masks.load(stage / "mask.pt"), arch


def random_sparse(model_name: str, density: float, budget: str = "uniform", seed: int = 0):
    """(freshly initialised model, random masks at `density` under `budget`, arch) of a zoo model
    at its default input shape: for benchmarking speed without a trained run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(model_name)
    if budget == "global":  # a global budget ranks scores; a random mask has none
        raise JackpotError("--budget global ranks scores, and a benchmark's mask is random: choose a per-layer "
                           "budget (uniform, erk, er, smart-ratio, uniform-first-dense)")
    names = prunable_names(model)
    densities = layer_densities(budget, model, names, density)
    params = dict(model.named_parameters())
    check_collapse(counts_from_densities(densities, {n: params[n].shape for n in names}),
                   refusal=f"layer collapse: {{layers}} would keep no weights at --density {density:g}; raise it")
    masks = random_masks(model, names, densities, torch.Generator().manual_seed(seed))
    info = next(i for i in list_models() if i.name == model_name)
    return model, masks, {"name": model_name, "input_shape": info.default_input_shape,
                          "num_classes": info.default_num_classes}
