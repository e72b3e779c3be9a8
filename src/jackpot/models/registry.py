"""Model registry: each family module registers its builders with ``@register``.

A builder has the signature ``build(input_shape, num_classes, width) -> nn.Module`` and receives
already-validated arguments (defaults filled in, rank checked, ``width`` a finite float > 0). It
multiplies every hidden width / channel count by ``width`` via :func:`scaled` (input and output sizes
unchanged); ``width == 1.0`` must build exactly the paper model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from jackpot.errors import JackpotError
from jackpot.models.init import apply_init

Builder = Callable[[tuple[int, ...], int, float], nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    default_input_shape: tuple[int, ...]
    default_num_classes: int
    family: str


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Builder
    input_ranks: tuple[int, ...] | None  # None: any rank (MLPs flatten their input)


# Filled once at import time by the family modules; never mutated afterwards.
_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    *,
    description: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    family: str,
    input_ranks: tuple[int, ...] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name`` (returns the builder unchanged)."""

    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        info = ModelInfo(name, description, tuple(input_shape), num_classes, family)
        _REGISTRY[name] = _Entry(info, builder, input_ranks)
        return builder

    return deco


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def list_models() -> list[ModelInfo]:
    return [_REGISTRY[n].info for n in model_names()]


def _entry(name: str) -> _Entry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise JackpotError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    return entry


def model_info(name: str) -> ModelInfo:
    return _entry(name).info


def is_vgg(name: str) -> bool:
    """Whether the model is a VGG, by its registered family (smart ratio divides a VGG's conv
    ratios by l^2, Su et al. 2020)."""
    return model_info(name).family == "vgg"


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def create_model(
    name: str,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    width: float = 1.0,
    init: str = "default",
    bn_init: str = "default",
) -> nn.Module:
    """Build a freshly initialised model; ``None`` arguments take the model's paper default.

    ``init`` / ``bn_init`` name the initialisation (see ``jackpot.models.init``); "default" keeps
    PyTorch's.

    ``width`` scales every hidden width / channel count (rounded, at least 1); input and output
    sizes are unchanged. ``width=1.0`` is the paper model. Seed with ``torch.manual_seed`` before
    calling for reproducible weights.
    """
    entry = _entry(name)
    width = _check_width(name, width)
    info = entry.info
    shape = info.default_input_shape if input_shape is None else input_shape
    classes = info.default_num_classes if num_classes is None else num_classes
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise JackpotError(f"model {name}: input shape must be a tuple of ints, got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise JackpotError(f"model {name}: invalid input shape {_shape_str(shape)}")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise JackpotError(f"model {name}: num_classes must be a positive int, got {num_classes!r}")
    if entry.input_ranks is not None and len(shape) not in entry.input_ranks:
        want = " or ".join(f"{r}-D" for r in entry.input_ranks)
        raise JackpotError(
            f"model {name} cannot take input shape {_shape_str(shape)}: it expects a {want} input per sample"
        )
    try:
        model = entry.builder(shape, classes, width)
        if init != "default" or bn_init != "default":
            apply_init(model, init, bn_init)
        _check_forward(model, shape, classes)
    except (RuntimeError, ValueError) as e:  # e.g. spatial size too small for the pooling stack
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JackpotError(f"model {name} cannot take input shape {_shape_str(shape)}: {msg}") from None
    return model


def _check_width(name: str, width) -> float:
    if isinstance(width, bool):
        raise JackpotError(f"model {name}: width must be a number > 0, got {width!r}")
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise JackpotError(f"model {name}: width must be a number > 0, got {width!r}") from None
    if not math.isfinite(w) or w <= 0:
        raise JackpotError(f"model {name}: width must be a finite number > 0, got {width!r}")
    return w


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest int (halves up), at least 1; exact at width 1."""
    if width == 1.0:
        return channels
    return max(1, math.floor(channels * width + 0.5))


def _check_forward(model: nn.Module, shape: tuple[int, ...], classes: int) -> None:
    """One zero-input forward in eval mode (BN running stats untouched, no RNG used)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, classes):
        raise RuntimeError(f"output shape {tuple(out.shape)} != (1, {classes})")


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def flat_features(features: nn.Module, shape: tuple[int, ...]) -> int:
    """Flattened output size of ``features`` for one sample of ``shape`` (zero-input dummy forward)."""
    with torch.no_grad():
        return features(torch.zeros(1, *shape)).flatten(1).shape[1]
