"""Iterative magnitude pruning (lottery tickets) with rewinding and the two classic controls.

Run directory:
    init.pt                      weights at initialisation (seeded by the config)
    rewind.pt                    weights at the rewind step k (== init.pt when k = 0)
    level_00/ticket/             dense training, 0 -> T (saves rewind.pt at step k)
    level_LL/mask.pt             the level's mask: magnitude pruning of level LL-1's trained ticket
    level_LL/ticket/             rewind weights * mask, trained k -> T
    level_LL/reinit/             same mask, fresh random initialisation, trained k -> T
    level_LL/random/             random mask with the ticket's per-layer counts on the rewind weights
Each stage is skipped when its done.json exists, so re-running resumes and --levels extends.
Retraining starts from fresh optimizer state at step k (momentum is not rewound), with the LR
schedule and data order of step k.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig, derive_seed, parse_layer_map, parse_step, split_list, validate
from ..data import load_dataset
from ..errors import JackpotError
from ..models import create_model
from ..sparse import Masks, prunable_names, prune, scores_magnitude
from ..sparse.prunable import check_layer_names, output_layer
from ..store import Run, atomic_torch_save, safe_torch_load
from ..train import Stage, train_stage

ARMS = ("ticket", "reinit", "random")


@dataclass
class LotteryContext:
    cfg: RunConfig
    run: Run
    dataset: object
    device: torch.device
    progress: Callable[[str], None]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset.num_train / self.cfg.data.batch_size)

    def new_model(self, seed_tag: tuple) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, *seed_tag))
            return create_model(self.cfg.model.model, self.dataset.input_shape, self.dataset.num_classes)


def level_dir(run: Run, level: int) -> Path:
    return run.stage(f"level_{level:02d}")


def run_lottery(cfg: RunConfig, root=None, device: str | torch.device = "cpu",
                progress: Callable[[str], None] = print) -> Run:
    cfg = validate(cfg)
    dataset = load_dataset(cfg.data.dataset, root=cfg.data.data_root, val_size=cfg.data.val_size,
                           seed=derive_seed(cfg.seed, "validation-split"))
    run = Run.create(cfg, root)
    ctx = LotteryContext(cfg, run, dataset, torch.device(device), progress)
    total = parse_step(cfg.train.duration, ctx.steps_per_epoch)
    rewind = parse_step(cfg.lottery.rewind, ctx.steps_per_epoch)
    if total <= 0:
        raise JackpotError(f"--duration {cfg.train.duration} is zero steps")
    if rewind >= total:
        raise JackpotError(f"--rewind {cfg.lottery.rewind} ({rewind} steps) is not before the end of "
                           f"training ({total} steps)")
    with run.lock():
        model = _initial_model(ctx)
        names = _prunable(ctx, model)
        masks = Masks.ones_for(model, names)
        for level in range(cfg.lottery.levels + 1):
            if level > 0:
                masks = _level_mask(ctx, level, masks)
            for arm in _arms(cfg, level):
                _train_arm(ctx, level, arm, masks, total, rewind)
        progress(f"done: {run.path}")
    return run


def run_lottery_job(job: tuple) -> Path:
    """Process-pool entry point: job = (cfg, root, device). Returns the run directory."""
    cfg, root, device = job
    return run_lottery(cfg, root=root, device=device, progress=_flush_print).path


def _flush_print(line: str) -> None:
    print(line, flush=True)


def _arms(cfg: RunConfig, level: int) -> list[str]:
    return ["ticket"] if level == 0 else ["ticket", *split_list(cfg.lottery.controls)]


def _initial_model(ctx: LotteryContext) -> torch.nn.Module:
    model = ctx.new_model(("init",))
    path = ctx.run.stage("init.pt")
    if not path.exists():
        atomic_torch_save(model.state_dict(), path)
    return model


def _prunable(ctx: LotteryContext, model) -> list[str]:
    m = ctx.cfg.masks
    names = prunable_names(model, m.keep_first, m.keep_output, split_list(m.keep_layers), m.include_bias)
    p = ctx.cfg.prune
    check_layer_names(model, parse_layer_map(p.layer_fractions, "--layer-fractions"))
    return names


def _layer_fractions(ctx: LotteryContext, model) -> dict[str, float]:
    p = ctx.cfg.prune
    rates = parse_layer_map(p.layer_fractions, "--layer-fractions")
    if p.output_fraction is not None:
        rates.setdefault(output_layer(model), p.output_fraction)
    return rates


def _level_mask(ctx: LotteryContext, level: int, previous: Masks) -> Masks:
    path = level_dir(ctx.run, level) / "mask.pt"
    if path.exists():
        return Masks.load(path)
    trained = ctx.new_model(("init",))
    trained.load_state_dict(safe_torch_load(level_dir(ctx.run, level - 1) / "ticket" / "final.pt",
                                            "trained weights"))
    p = ctx.cfg.prune
    masks = prune(scores_magnitude(trained, previous), previous, p.fraction, p.scope,
                  _layer_fractions(ctx, trained))
    masks.save(path)
    return masks


def _start_weights(ctx: LotteryContext, arm: str, level: int, rewind: int) -> dict:
    if arm == "reinit":
        return ctx.new_model(("reinit", level)).state_dict()
    path = ctx.run.stage("rewind.pt") if rewind > 0 else ctx.run.stage("init.pt")
    return safe_torch_load(path, "rewind weights")


def _train_arm(ctx: LotteryContext, level: int, arm: str, masks: Masks, total: int, rewind: int) -> None:
    stage_dir = level_dir(ctx.run, level) / arm
    if (stage_dir / "done.json").exists():
        return
    model = ctx.new_model(("init",))
    at_step = {}
    if level == 0:
        start = 0
        if rewind > 0:
            at_step[rewind] = lambda m: atomic_torch_save(m.state_dict(), ctx.run.stage("rewind.pt"))
    else:
        start = rewind
        model.load_state_dict(_start_weights(ctx, arm, level, rewind))
    if arm == "random":
        g = torch.Generator().manual_seed(derive_seed(ctx.cfg.seed, "random-mask", level))
        masks = masks.random_like(g)
    label = f"[seed {ctx.cfg.seed}] level {level}/{ctx.cfg.lottery.levels} {arm:<6} " \
            f"{100 * masks.density():5.1f}% weights"
    t0 = time.perf_counter()
    record = train_stage(Stage(
        dir=stage_dir, model=model, dataset=ctx.dataset, train=ctx.cfg.train,
        batch_size=ctx.cfg.data.batch_size,
        order_seed=derive_seed(ctx.cfg.seed, "data-order"), start=start, end=total,
        masks=masks, device=ctx.device, at_step=at_step,
        progress=_throttled(ctx.progress, label)))
    acc = record["final"]["test_acc"]
    ctx.progress(f"{label}  test acc {100 * acc:.1f}%  ({time.perf_counter() - t0:.1f}s)")


def _throttled(progress: Callable[[str], None], label: str, every: float = 10.0) -> Callable[[str], None]:
    """Per-epoch lines for long stages only: at most one every `every` seconds."""
    last = [time.perf_counter()]

    def show(line: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            progress(f"{label}  {line}")
    return show
