"""One step-based training loop with callbacks, optimizers, LR schedules and exact resume."""
from .loop import Stage, train_stage
from .optim import build_optimizer, lr_at

__all__ = ["Stage", "train_stage", "build_optimizer", "lr_at"]
