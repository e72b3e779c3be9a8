"""Iterative magnitude pruning (lottery tickets) with rewinding, retraining modes and controls.

Run directory:
    init.pt                      weights at initialisation (seeded by the config)
    rewind.pt                    weights at the rewind step k (only when k > 0)
    level_00/ticket/             dense training, 0 -> T (saves rewind.pt at step k)
    level_LL/mask.pt             the level's mask: magnitude pruning of level LL-1's trained ticket
    level_LL/ticket/             the ticket, retrained k -> T (see --retrain)
    level_LL/reinit/             same mask, fresh random initialisation (trained over the ticket's
                                 own steps k -> T, with its LR schedule and data order)
    level_LL/random/             random mask with the ticket's per-layer counts, same start weights
    level_LL/clean/              with --corrupt: the ticket trained on clean data (the ticket arm
                                 itself, which finds the next mask, trains on the corrupted data)
Each stage is skipped when its done.json exists, so re-running resumes and --levels extends.

Retraining (--retrain), after level L's mask is found on level L-1's trained ticket:
  rewind     weights rewound to step k (initialisation when k = 0), LR schedule and data order
             resumed at step k (Frankle & Carbin; Frankle et al. 2019 "late resetting");
  lr-rewind  trained weights kept, LR schedule replayed from step k (Renda et al. 2020);
  finetune   trained weights kept, T - k steps at the final learning rate (Renda et al. 2020).
Optimizer state always starts fresh (momentum is not rewound).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import RunConfig, parse_layer_map, split_list
from ..errors import JackpotError
from ..sparse import Masks, prune, scores_magnitude
from ..sparse.prunable import check_layer_names, output_layer
from ..sparse.pruning import keep_top
from ..store import Run, safe_torch_load
from ..train import lr_at, train_stage
from .context import RunContext, report_stage

ARMS = ("ticket", "reinit", "random")


def level_dir(run: Run, level: int) -> Path:
    return run.stage(f"level_{level:02d}")


def run_lottery(cfg: RunConfig, root=None, device: str | torch.device = "cpu",
                progress=print, dataset=None) -> Run:
    ctx = RunContext.open(cfg, root, device, progress, dataset, check=_check)
    total, rewind = ctx.total_steps, ctx.steps(cfg.lottery.rewind)
    with ctx.run.lock():
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


def _trained_ticket(ctx: RunContext, level: int) -> torch.nn.Module:
    model = ctx.new_model(("init",))
    model.load_state_dict(safe_torch_load(level_dir(ctx.run, level) / "ticket" / "final.pt", "trained weights"))
    return model


def _level_mask(ctx: RunContext, level: int, previous: Masks) -> Masks:
    path = level_dir(ctx.run, level) / "mask.pt"
    if path.exists():
        return Masks.load(path)
    trained = _trained_ticket(ctx, level - 1)
    scores = scores_magnitude(trained, previous)
    p, budget = ctx.cfg.prune, ctx.cfg.lottery.budget
    if p.score == "magnitude-init-normalized":
        init = safe_torch_load(ctx.run.stage("init.pt"), "initial weights")
        scores = {n: s / max(float(init[n].float().std()), 1e-12) for n, s in scores.items()}
    if budget:  # hybrid tickets: per-layer counts from the budget, positions by magnitude
        from ..sparse.distributions import counts_from_densities
        density = (1.0 - p.fraction) ** level
        counts = counts_from_densities(ctx.layer_densities(budget, trained, list(previous), density),
                                       {n: m.shape for n, m in previous.items()})
        masks = keep_top(scores, previous, {n: min(c, int(previous[n].sum())) for n, c in counts.items()})
    else:
        rates = parse_layer_map(p.layer_fractions, "--layer-fractions")
        if p.output_fraction is not None:
            rates.setdefault(output_layer(trained), p.output_fraction)
        masks = prune(scores, previous, p.fraction, p.scope, rates)
    dead = [n for n, c in masks.layer_counts().items() if c == 0]
    if dead:  # a disconnected network is no ticket: stop before training it
        raise JackpotError(f"level {level} would prune {', '.join(dead)} to zero weights; stop at fewer "
                           "--levels, lower --fraction, or keep that layer dense (--keep-layers)")
    masks.save(path)
    return masks


def _start_weights(ctx: RunContext, arm: str, level: int, rewind: int) -> dict:
    if arm == "reinit":
        return ctx.new_model(("reinit", level)).state_dict()
    if ctx.cfg.lottery.retrain in ("lr-rewind", "finetune"):
        return _trained_ticket(ctx, level - 1).state_dict()
    return safe_torch_load(ctx.run.stage("rewind.pt" if rewind > 0 else "init.pt"), "rewind weights")


def _train_arm(ctx: RunContext, level: int, arm: str, masks: Masks, total: int, rewind: int) -> None:
    rel = f"level_{level:02d}/{arm}"
    if (ctx.run.stage(rel) / "done.json").exists():
        return
    model = ctx.new_model(("init",))
    at_step, start, fixed_lr = {}, 0, None
    if level == 0:
        if rewind > 0:
            at_step[rewind] = lambda m: ctx.save_once(m.state_dict(), "rewind.pt")
    else:
        start = rewind
        model.load_state_dict(_start_weights(ctx, arm, level, rewind))
        if ctx.cfg.lottery.retrain == "finetune":
            fixed_lr = lr_at(total - 1, total, ctx.cfg.train, ctx.steps_per_epoch)
    if arm == "random":
        masks = masks.random_like(ctx.generator("random-mask", level))
    label = ctx.label(f"level {level}/{ctx.cfg.lottery.levels} {arm:<6} {100 * masks.density():5.1f}% weights")
    t0 = time.perf_counter()
    record = train_stage(ctx.stage(rel, model, masks, start, total, label, finding=(arm == "ticket"),
                                   at_step=at_step, fixed_lr=fixed_lr))
    report_stage(ctx, label, record, time.perf_counter() - t0)
