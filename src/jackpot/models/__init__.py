"""Model zoo: ``create_model(name, input_shape, num_classes)`` over a registry of paper architectures.

Conventions relied on elsewhere: every prunable layer is a plain ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``;
modules are registered in data-flow order, so the first conv/linear in ``named_modules()`` is the input
layer and the last ``nn.Linear`` is the output layer.
"""

from __future__ import annotations

from torch import nn

from jackpot.errors import JackpotError

# Importing the family modules fills the registry.
from . import conv, lenet, mlp, mnist1d, resnet_cifar, resnet_imagenet, vgg, wrn  # noqa: F401
from .registry import ModelInfo, create_model, list_models, model_names, register

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def output_layer_name(model: nn.Module) -> str:
    """Module name of the output layer: the last ``nn.Linear`` in ``named_modules()`` order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise JackpotError(f"{type(model).__name__} has no nn.Linear output layer")
    return names[-1]


def first_layer_name(model: nn.Module) -> str:
    """Module name of the input layer: the first conv/linear in ``named_modules()`` order."""
    for n, m in model.named_modules():
        if isinstance(m, _LAYER_TYPES):
            return n
    raise JackpotError(f"{type(model).__name__} has no conv or linear layer")


__all__ = [
    "ModelInfo", "create_model", "first_layer_name", "list_models", "model_names",
    "output_layer_name", "register",
]
