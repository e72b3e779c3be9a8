"""Iterative magnitude pruning (lottery tickets) with rewinding, retraining modes and controls.

Run directory:
    init.pt                      weights at initialisation (seeded by the config)
    rewind.pt                    weights at the rewind step k (only when k > 0)
    level_00/ticket/             dense training, 0 -> T (saves rewind.pt at step k)
    level_LL/mask.pt             the level's mask: magnitude pruning of level LL-1's trained ticket
    level_LL/ticket/             the ticket, retrained k -> T (see --retrain)
    level_LL/reinit/             same mask, fresh random initialisation (see "Controls" below)
    level_LL/random/             random mask with the ticket's per-layer counts, same start weights
    level_LL/clean/              with --corrupt: the ticket trained on clean data (the ticket arm
                                 itself, which finds the next mask, trains on the corrupted data)
    level_LL/ticket/rank_weights.pt  with --rank-at: the ticket's weights at that step, which
                                 rank the next level's mask instead of the trained weights
Each stage is skipped when finished (done.json, and the files it vouches for, in place), so
re-running resumes, recomputes a damaged stage, and --levels extends.

Choosing each level's mask (--scope, --prune-schedule, --rounding, --rank-at):
  geometric  level L removes --fraction of the weights still active (Frankle & Carbin; OpenLTH);
  linear     level L has sparsity L x --fraction of each group's full size (the MNIST-1D notebook's
             np.linspace(0, 1, 100) is --fraction 0.010101010101 = 1/99: level 91 is its 8.1%);
  groups     layerwise (each tensor), layerwise-joint (a layer's weight and bias ranked together,
             the notebook's flattened per-layer vector) or global (one pool);
  rounding   nearest keeps round(d n); floor-drop drops int(p n) (notebook); ceil-drop drops
             ceil(p n); openlth drops ceil(p R) + 1 with R counting the dense layers too (OpenLTH's
             sparse_global, exactly).
A schedule that prunes a layerwise group to zero by the last level is refused before anything runs.
The random-mask arm draws a fresh mask every level with the ticket's per-layer counts (not nested
in the previous level's, except under lr-rewind/finetune: see Controls; with layerwise-joint, one
draw over each layer's weight and bias together, as the notebook's random criterion on the
flattened layer); --random-init own trains it from its own initialisation, fixed over levels (the
notebook's random trial), instead of the ticket's start weights.

Retraining (--retrain), after level L's mask is found on level L-1's trained ticket:
  rewind     weights rewound to step k (initialisation when k = 0), LR schedule and data order
             resumed at step k (Frankle & Carbin; Frankle et al. 2019 "late resetting");
  lr-rewind  trained weights kept, LR schedule replayed from step k (Renda et al. 2020);
  finetune   trained weights kept, T - k steps at the final learning rate (Renda et al. 2020).
Optimizer state always starts fresh (momentum is not rewound).

Controls: each trains as the network it stands for would.
  reinit     with --retrain rewind: over the ticket's own steps k -> T, with its LR schedule and data
             order; with lr-rewind or finetune (which keep *trained* weights) its fresh weights train
             as a fresh network does: 0 -> T with the full LR schedule (a fresh init at the final LR,
             or replayed from k, stays near chance and says nothing about the mask);
  random     the ticket's start weights and training span; with --retrain rewind its positions are
             uniform over each layer; with lr-rewind or finetune they are drawn among the weights
             level L-1's trained network still has: random pruning of the very network the ticket
             prunes by magnitude (only the choice of positions differs), and no kept weight starts
             at a zero pruned at an earlier level.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ..config import KindSpec, RunConfig, parse_layer_map, parse_step, split_list
from ..data.corrupt import check_corruption
from ..errors import JackpotError
from ..sparse import Masks, prune, scores_magnitude
from ..sparse.distributions import BUDGETS, check_collapse, counts_from_densities
from ..sparse.prunable import check_layer_names, output_layer, weight_layers
from ..sparse.pruning import keep_top, kept_count, prune_groups
from ..sparse.schedules import Schedule
from ..sparse.scores import init_scales, magnitude_init_normalized
from ..store import Run, load_weights, safe_torch_load
from ..train import lr_at, train_stage
from ..train.loop import is_done
from .context import RunContext, report_stage
from .registry import Procedure, Source, last_level, register

CONTROL_ARMS = ("reinit", "random")

RANK_SNAPSHOT = "rank_weights.pt"  # with --rank-at: the ticket's weights at that step


def level_dir(run: Run, level: int) -> Path:
    return run.stage(f"level_{level:02d}")


def run_lottery(cfg: RunConfig, root=None, device: str | torch.device = "cpu",
                progress=print, dataset=None, wait=False) -> Run:
    ctx = RunContext.open(cfg, root, device, progress, dataset, check=_check, wait=wait)
    total, rewind = ctx.total_steps, ctx.steps(cfg.lottery.rewind)
    with ctx.lock():
        model = ctx.new_model(("init",))
        ctx.save_once(model.state_dict(), "init.pt")
        masks = Masks.ones_for(model, ctx.prunable(model))
        clean = ["clean"] if cfg.data.corrupt else []  # the ticket on clean data (sanity checks)
        for level in range(cfg.lottery.levels + 1):
            if level > 0:
                masks = _level_mask(ctx, level, masks)
            for arm in ["ticket", *clean] + ([] if level == 0 else split_list(cfg.lottery.controls)):
                _train_arm(ctx, level, arm, masks, total, rewind)
        progress(f"done: {ctx.run.path}")
    return ctx.run


def _check(ctx: RunContext, model) -> None:
    cfg = ctx.cfg
    total, rewind = ctx.total_steps, ctx.steps(cfg.lottery.rewind)
    if rewind >= total:
        raise JackpotError(f"--rewind {cfg.lottery.rewind} ({rewind} steps) is not before the end of "
                           f"training ({total} steps)")
    check_layer_names(model, parse_layer_map(cfg.prune.layer_fractions, "--layer-fractions"))
    if cfg.prune.rank_at:
        rank = ctx.steps(cfg.prune.rank_at)
        if not rewind < rank <= total:
            raise JackpotError(f"--rank-at {cfg.prune.rank_at} ({rank} steps) must lie after the rewind point "
                               f"({rewind}) and no later than the end of training ({total})")
    if cfg.prune.scope == "layerwise-joint" and not cfg.masks.include_bias:
        raise JackpotError("--scope layerwise-joint ranks each layer's weight and bias together: add --include-bias")
    _planned_collapse(ctx, model)
    if cfg.lottery.random_init == "own" and (rewind > 0 or cfg.lottery.retrain != "rewind"):
        raise JackpotError("--random-init own gives the random-mask arm its own initialisation: it needs "
                           "--rewind 0it and --retrain rewind")


def _dense_weights(model: torch.nn.Module, masks: Masks) -> int:
    """Weights of conv/linear layers the masks leave out (--keep-output...): OpenLTH's rounding
    counts them among the remaining weights."""
    params = dict(model.named_parameters())
    weights = [f"{layer}.weight" if layer else "weight" for layer in weight_layers(model)]
    return sum(params[n].numel() for n in weights if n not in masks)


def _planned_collapse(ctx: RunContext, model: torch.nn.Module) -> None:
    """Refuse up front a schedule that prunes some group to zero weights by its last level: the
    counts of layerwise groups follow from their sizes alone (global pools and budgets depend on
    the weights, so they are checked when each level's mask is made)."""
    p, lot = ctx.cfg.prune, ctx.cfg.lottery
    if lot.budget and lot.budget != "global":  # a fixed budget's counts follow from the sizes too
        names = ctx.prunable(model)
        shapes = {n: param.shape for n, param in model.named_parameters() if n in names}
        for level in range(1, lot.levels + 1):
            counts = counts_from_densities(ctx.layer_densities(lot.budget, model, names, level_density(p, level)),
                                           shapes)
            check_collapse(counts, refusal=f"level {level} would prune {{layers}} to zero weights (--budget "
                           f"{lot.budget}); stop at fewer --levels (at most {level - 1}) or lower --fraction")
        return
    if lot.budget or p.scope == "global":
        return
    rates = parse_layer_map(p.layer_fractions, "--layer-fractions")
    if p.output_fraction is not None:
        rates.setdefault(output_layer(model), p.output_fraction)
    names = ctx.prunable(model)
    params = dict(model.named_parameters())
    groups, group_rates = prune_groups(names, p.fraction, p.scope, rates)
    for key, members in groups.items():
        size = sum(params[n].numel() for n in members)
        active = size
        for level in range(1, lot.levels + 1):
            active = kept_count(active, size, group_rates[key], p.rounding, p.prune_schedule, level)
            if active == 0:
                raise JackpotError(f"level {level} would prune {', '.join(members)} to zero weights; stop at "
                                   f"fewer --levels (at most {level - 1}), lower --fraction, or keep that layer "
                                   "dense (--keep-layers)")


def _trained_ticket(ctx: RunContext, level: int) -> torch.nn.Module:
    return load_weights(ctx.new_model(("init",)), level_dir(ctx.run, level) / "ticket" / "final.pt")


def ranking_weights(ctx: RunContext, level: int) -> torch.nn.Module:
    """The weights whose magnitudes choose level+1's mask: the trained ticket, or its snapshot at
    --rank-at (the MNIST-1D notebook prunes by the step-1000 checkpoint of a 1501-step run)."""
    if not ctx.cfg.prune.rank_at or ctx.steps(ctx.cfg.prune.rank_at) >= ctx.total_steps:
        return _trained_ticket(ctx, level)
    return load_weights(ctx.new_model(("init",)), level_dir(ctx.run, level) / "ticket" / RANK_SNAPSHOT,
                        "ranking weights")


def level_density(prune_cfg, level: int) -> float:
    """Nominal density of the prunable set at `level` under the level schedule."""
    if prune_cfg.prune_schedule == "linear":
        return max(0.0, Schedule("linear", 1.0, 0.0).value(level * prune_cfg.fraction, clip=False))
    return Schedule("exponential", 1.0, 1.0 - prune_cfg.fraction).value(level, clip=False)


def _level_mask(ctx: RunContext, level: int, previous: Masks) -> Masks:
    path = level_dir(ctx.run, level) / "mask.pt"
    arms = sorted(p for p in path.parent.iterdir() if p.is_dir()) if path.parent.is_dir() else []
    saved = ctx.saved_mask(path, trained_on=arms)  # None: missing, or damaged before any arm finished
    if saved is not None:
        return saved
    trained = ranking_weights(ctx, level - 1)
    p, budget = ctx.cfg.prune, ctx.cfg.lottery.budget
    if p.score == "magnitude-init-normalized":
        init = safe_torch_load(ctx.run.stage("init.pt"), "initial weights")
        scores = magnitude_init_normalized(trained, previous, init_scale=init_scales(init, previous))
    else:
        scores = scores_magnitude(trained, previous)
    if budget:  # hybrid tickets: per-layer counts from the budget, positions by magnitude
        density = level_density(p, level)
        # the global budget: each layer's count from a global ranking of the same scores
        counts = counts_from_densities(ctx.layer_densities(budget, trained, list(previous), density, scores=scores),
                                       {n: m.shape for n, m in previous.items()})
        masks = keep_top(scores, previous, {n: min(c, int(previous[n].sum())) for n, c in counts.items()})
    else:
        rates = parse_layer_map(p.layer_fractions, "--layer-fractions")
        if p.output_fraction is not None:
            rates.setdefault(output_layer(trained), p.output_fraction)
        masks = prune(scores, previous, p.fraction, p.scope, rates, rounding=p.rounding,
                      schedule=p.prune_schedule, level=level, ignored=_dense_weights(trained, previous))
    # a disconnected network is no ticket: stop before training it
    check_collapse(masks.layer_counts(), refusal=f"level {level} would prune {{layers}} to zero weights; stop at "
                   "fewer --levels, lower --fraction, or keep that layer dense (--keep-layers)")
    masks.save(path)
    return masks


def _start_weights(ctx: RunContext, arm: str, level: int, rewind: int) -> dict:
    if arm == "reinit":
        return ctx.new_model(("reinit", level)).state_dict()
    if arm == "random" and ctx.cfg.lottery.random_init == "own":
        return ctx.new_model(("random-arm-init",)).state_dict()
    if keeps_trained_weights(ctx.cfg.lottery.retrain):
        return _trained_ticket(ctx, level - 1).state_dict()
    return safe_torch_load(ctx.run.stage("rewind.pt" if rewind > 0 else "init.pt"), "rewind weights")


def keeps_trained_weights(retrain: str) -> bool:
    """lr-rewind and finetune retrain the pruned *trained* network (rewind rewinds its weights)."""
    return retrain in ("lr-rewind", "finetune")


def arm_span(ctx: RunContext, arm: str, total: int, rewind: int) -> tuple[int, float | None]:
    """(first step, fixed learning rate or None) of a pruned level's arm (see "Controls" above):
    fresh weights under a mode that keeps trained weights train 0 -> T with the full schedule."""
    retrain = ctx.cfg.lottery.retrain
    if arm == "reinit" and keeps_trained_weights(retrain):
        return 0, None
    fixed = lr_at(total - 1, total, ctx.cfg.train, ctx.steps_per_epoch) if retrain == "finetune" else None
    return rewind, fixed


def _random_arm_mask(ctx: RunContext, level: int, ticket: Masks) -> Masks:
    g = ctx.generator("random-mask", level)
    if ctx.cfg.prune.scope == "layerwise-joint" and not keeps_trained_weights(ctx.cfg.lottery.retrain):
        layers, _ = prune_groups(list(ticket), 0.0, "layerwise-joint")  # weight and bias drawn together
        return ticket.random_in_groups(g, list(layers.values()))
    if not keeps_trained_weights(ctx.cfg.lottery.retrain) or level == 1:
        return ticket.random_like(g)  # level 1 prunes a dense network: the same draw either way
    return ticket.random_like(g, within=Masks.load(level_dir(ctx.run, level - 1) / "mask.pt"))


def _train_arm(ctx: RunContext, level: int, arm: str, masks: Masks, total: int, rewind: int) -> None:
    rel = f"level_{level:02d}/{arm}"
    if is_done(ctx.run.stage(rel)):  # done.json and the files it vouches for (else recomputed)
        return
    model = ctx.new_model(("init",))
    at_step, start, fixed_lr = {}, 0, None
    outputs = []  # what at_step saves: the stage vouches for it (lost, the stage is recomputed)
    if arm == "ticket" and ctx.cfg.prune.rank_at:  # the snapshot the next level's mask is ranked by
        at_step[ctx.steps(ctx.cfg.prune.rank_at)] = lambda m: ctx.save_once(m.state_dict(), f"{rel}/{RANK_SNAPSHOT}")
        outputs.append(ctx.run.stage(rel, RANK_SNAPSHOT))
    if level == 0:
        if rewind > 0:
            at_step[rewind] = lambda m: ctx.save_once(m.state_dict(), "rewind.pt")
            outputs.append(ctx.run.stage("rewind.pt"))
    else:
        model.load_state_dict(_start_weights(ctx, arm, level, rewind))
        start, fixed_lr = arm_span(ctx, arm, total, rewind)
    if arm == "random":
        masks = _random_arm_mask(ctx, level, masks)
    label = ctx.label(f"level {level}/{ctx.cfg.lottery.levels} {arm:<6} {100 * masks.density():5.1f}% weights")
    t0 = time.perf_counter()
    record = train_stage(ctx.stage(rel, model, masks, start, total, label, finding=(arm == "ticket"),
                                   at_step=at_step, fixed_lr=fixed_lr, outputs=outputs))
    report_stage(ctx, label, record, time.perf_counter() - t0)


def _stages(cfg: RunConfig) -> list[str]:
    """Every stage a finished lottery run has: each level's ticket (and clean arm), its controls."""
    clean = ["clean"] if cfg.data.corrupt else []
    stages = [f"level_00/{a}" for a in ["ticket", *clean]]
    for level in range(1, cfg.lottery.levels + 1):
        stages += [f"level_{level:02d}/{a}" for a in ["ticket", *clean, *split_list(cfg.lottery.controls)]]
    return stages


def _mask_path(run: Run, level: int | None) -> Path:
    if level is None:
        level = last_level(run.path)
        if level is None:
            raise JackpotError(f"run {run.path.name} has no pruned level yet")
    return level_dir(run, level) / "mask.pt"


def _trained_stage(run: Run, level: int | None, arm: str) -> Path:
    if level is None:
        level = last_level(run.path) or 0
    arms = ("ticket", "clean", *CONTROL_ARMS)
    if arm not in arms:
        raise JackpotError(f"unknown --arm {arm!r}; a lottery level trains {', '.join(arms)} (clean: with --corrupt)")
    if level == 0:
        raise JackpotError(f"run {run.path.name} has no trained sparse network at level_00/{arm} (level 0 is "
                           "dense; train a pruned level first)")
    lot = run.config().lottery
    if not 0 < level <= lot.levels:
        raise JackpotError(f"run {run.path.name} has levels 0-{lot.levels}: there is no level {level}")
    if not (level_dir(run, level) / arm).is_dir():
        raise JackpotError(f"run {run.path.name} has no {arm} arm at level {level} (its --controls: "
                           f"{lot.controls or 'none'})")
    return level_dir(run, level) / arm


def _branch_source(ctx: RunContext, level: int, retrain: str = "", arm: str = "ticket") -> Source:
    """The ticket at `level` as the run trains it; `retrain` switches the retraining mode (weight
    rewinding vs learning-rate rewinding vs fine-tuning) for the branch; `arm` "reinit" gives the
    span of fresh weights (arm_span: 0 -> T when the mode keeps trained weights)."""
    if retrain:
        ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, lottery=dataclasses.replace(
            ctx.cfg.lottery, retrain=retrain)))
    if level < 1:
        raise JackpotError("branch from a pruned level: --level must be >= 1")
    mask_path = level_dir(ctx.run, level) / "mask.pt"
    if not mask_path.exists():
        raise JackpotError(f"run {ctx.run.path.name} has no ticket at level {level} yet "
                           f"(run `jackpot lottery` with --levels >= {level} first)")
    total, rewind = ctx.total_steps, ctx.steps(ctx.cfg.lottery.rewind)
    start, fixed = arm_span(ctx, arm, total, rewind)
    return Source(Masks.load(mask_path), _start_weights(ctx, "ticket", level, rewind), start, total, fixed)


def _inverted_mask(ctx: RunContext, level: int, ticket: Masks) -> Masks:
    """The lowest of the magnitudes level L was ranked on, chosen inside the level L-1 mask: only
    the last pruning step is inverted."""
    previous = Masks.load(level_dir(ctx.run, level - 1) / "mask.pt") if level > 1 else \
        Masks({n: torch.ones_like(m) for n, m in ticket.items()})
    trained = ranking_weights(ctx, level - 1)
    scores = {n: -s for n, s in scores_magnitude(trained, previous).items()}
    return keep_top(scores, previous, ticket.layer_counts())


def _validate(cfg: RunConfig) -> None:
    p, lot = cfg.prune, cfg.lottery
    for name, value in [("--fraction", p.fraction), ("--output-fraction", p.output_fraction),
                        *[(f"--layer-fractions {k}", v)
                          for k, v in parse_layer_map(p.layer_fractions, "--layer-fractions").items()]]:
        if value is not None and not 0.0 <= value < 1.0:
            raise JackpotError(f"{name} must be in [0, 1) (a fraction of remaining weights to prune), got {value}")
    if lot.levels < 0:
        raise JackpotError(f"--levels must be >= 0, got {lot.levels}")
    parse_step(lot.rewind, 1)
    if lot.budget and lot.budget not in BUDGETS:
        raise JackpotError(f"unknown budget {lot.budget!r}; choose {', '.join(b for b in BUDGETS if b != 'custom')}")
    if lot.budget == "custom":  # lottery reads no per-layer density map
        raise JackpotError("--budget custom needs per-layer densities, which lottery does not take: give "
                           "per-layer pruning rates with --layer-fractions instead")
    unknown = set(split_list(lot.controls)) - set(CONTROL_ARMS)
    if unknown:
        raise JackpotError(f"unknown control arm(s) {sorted(unknown)}; choose from {', '.join(CONTROL_ARMS)}")
    check_corruption(cfg.data.corrupt, cfg.data.corrupt_fraction)


CONFIG = KindSpec(
    groups=("data", "model", "train", "masks", "prune", "lottery"),
    read_when={
        # _level_mask: with --budget the budget fixes each layer's count (--scope stays read: the
        # random arm draws per layer-group under layerwise-joint)
        "prune.output_fraction": lambda c: not c.lottery.budget,
        "prune.layer_fractions": lambda c: not c.lottery.budget,
        "prune.rounding": lambda c: not c.lottery.budget,
        "prune.rank_at": lambda c: c.prune.rank_at != c.train.duration,  # ranking_weights: at the end = final
        "lottery.random_init": lambda c: "random" in split_list(c.lottery.controls),  # the random arm's start
    },
    validate=_validate,
    never_lower=("lottery.levels",),  # computed levels are counted against the record (`ls`)
)

PROCEDURE = register(Procedure(
    kind="lottery", config=CONFIG,
    help="iterative magnitude pruning with rewinding and controls",
    description="Lottery tickets: train, prune, rewind, repeat; with the random-reinit and random-mask "
                "controls at every level. Re-running resumes; a larger --levels extends a finished run.",
    run=run_lottery, check=_check, stages=_stages, mask_path=_mask_path, trained_stage=_trained_stage,
    label=lambda cfg: "IMP", levels=True, target_density=lambda cfg: 1.0, family=lambda cfg: "IMP",
    summary_file=None, branch_source=_branch_source, inverted_mask=_inverted_mask))
