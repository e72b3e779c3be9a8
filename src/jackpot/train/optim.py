"""Optimizers and learning-rate schedules. The LR is a pure function of the step, so resuming
at any step (or rewinding to step k) restores the schedule exactly."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig, parse_step, split_list
from ..errors import JackpotError


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise JackpotError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adam or adamw")


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
