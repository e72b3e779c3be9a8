"""Optimizers and learning-rate schedules. The LR is a pure function of the step, so resuming
at any step (or rewinding to step k) restores the schedule exactly."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig, parse_step, split_list
from ..errors import JackpotError


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer, in its fused implementation where this torch offers one.

    Why fused: on CPU the default Adam computes `exp_avg_sq.sqrt()` as a separate op, and torch's
    vectorised sqrt of exact zeros (every pruned weight's state) was measured 20x slower than of
    other values, making a 90%-masked LeNet step 1.7x slower than dense. The fused kernel has no
    such penalty and is also faster for dense training (bench/masking_overhead.py).
    """
    params = list(params)
    kinds = {"sgd": (torch.optim.SGD, dict(momentum=cfg.momentum, nesterov=cfg.nesterov)),
             "adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {})}
    if cfg.optimizer not in kinds:
        raise JackpotError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adam or adamw")
    cls, extra = kinds[cfg.optimizer]
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **extra)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype/torch
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def lr_at(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate used for the update at `step` (0-based) of a `total`-step training."""
    warmup = parse_step(cfg.warmup, steps_per_epoch)
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        milestones = [parse_step(m, steps_per_epoch) for m in split_list(cfg.milestones)]
        return cfg.lr * cfg.gamma ** sum(step >= m for m in milestones)
    if cfg.schedule == "cosine":
        span = max(1, total - warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    raise JackpotError(f"unknown schedule {cfg.schedule!r}; choose constant, step or cosine")
