"""Model zoo: ``create_model(name, input_shape, num_classes, width)`` over a registry of paper architectures.

``width`` scales hidden widths for the "small-dense" baseline; ``width_for_params`` finds the width
whose dense model matches a given parameter count (e.g. that of a sparse model).

Conventions relied on elsewhere: every prunable layer is a plain ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``;
modules are registered in data-flow order, so the first conv/linear in ``named_modules()`` is the input
layer and the last ``nn.Linear`` is the output layer.
"""

from __future__ import annotations

import torch
from torch import nn

from jackpot.errors import JackpotError

# Importing the family modules fills the registry.
from . import conv, lenet, mlp, mnist1d, resnet_cifar, resnet_imagenet, vgg, wrn  # noqa: F401
from .layers import WEIGHT_LAYERS
from .registry import ModelInfo, create_model, is_vgg, list_models, model_info, model_names, register


def output_layer_name(model: nn.Module) -> str:
    """Module name of the output layer: the last ``nn.Linear`` in ``named_modules()`` order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise JackpotError(f"{type(model).__name__} has no nn.Linear output layer")
    return names[-1]


def first_layer_name(model: nn.Module) -> str:
    """Module name of the input layer: the first conv/linear in ``named_modules()`` order."""
    for n, m in model.named_modules():
        if isinstance(m, WEIGHT_LAYERS):
            return n
    raise JackpotError(f"{type(model).__name__} has no conv or linear layer")


MIN_WIDTH = 1 / 64
_MAX_BUILDS = 30


def _count_params(name: str, input_shape, num_classes, width: float) -> int:
    with torch.random.fork_rng(devices=[]):
        model = create_model(name, input_shape, num_classes, width=width)
    return sum(p.numel() for p in model.parameters())


def width_for_params(name: str, input_shape, num_classes, target_params: int) -> float:
    """Width in [1/64, 1] whose model's total parameter count is closest to ``target_params``.

    Bisection on the width (the count is monotone in it), at most ~30 model builds; the global RNG
    is left untouched. ``None`` shape / classes take the model's defaults, as in ``create_model``.
    """
    if isinstance(target_params, bool) or not isinstance(target_params, int) or target_params < 1:
        raise JackpotError(f"model {name}: target parameter count must be a positive int, got {target_params!r}")
    lo, hi = MIN_WIDTH, 1.0
    n_lo = _count_params(name, input_shape, num_classes, lo)
    if n_lo > target_params:
        raise JackpotError(
            f"model {name}: even width 1/64 has {n_lo:,} parameters, more than the target {target_params:,}"
        )
    n_hi = _count_params(name, input_shape, num_classes, hi)
    if n_hi < target_params:
        raise JackpotError(
            f"model {name}: target {target_params:,} parameters exceeds the dense model's {n_hi:,} (width 1.0)"
        )
    # Invariant: n_lo <= target <= n_hi.
    for _ in range(_MAX_BUILDS - 2):
        if n_lo == target_params or n_hi == target_params:
            break
        mid = (lo + hi) / 2
        if not lo < mid < hi:
            break
        n_mid = _count_params(name, input_shape, num_classes, mid)
        if n_mid <= target_params:
            lo, n_lo = mid, n_mid
        else:
            hi, n_hi = mid, n_mid
    return lo if target_params - n_lo <= n_hi - target_params else hi


__all__ = [
    "ModelInfo", "create_model", "first_layer_name", "list_models", "model_names",
    "output_layer_name", "register", "width_for_params",
]
