"""Weight initialisation as a named setting (`--init`, `--bn-init`), applied after a model is built.

Every lottery result depends on the initialisation, and the references differ:

  default          the architecture's own: PyTorch's for most models (conv/linear weights
                   kaiming-uniform with a = sqrt(5), i.e. U(-b, b) with b = 1 / sqrt(fan_in), std
                   1 / sqrt(3 fan_in); biases U(-b, b)); the CIFAR ResNets apply kaiming-normal
                   (fan_in), the ImageNet ResNets and WRN kaiming-normal (fan_out) to their convs,
                   as their papers do (models/resnet_*.py, wrn.py).
  kaiming-normal   N(0, std^2), std = sqrt(2 / fan_in) (He et al. 2015, ReLU gain; OpenLTH's
                   default `kaiming_normal` for every model).
  kaiming-uniform  U(-b, b), b = sqrt(6 / fan_in), same std as kaiming-normal (OpenLTH `kaiming_uniform`).
  xavier-normal    N(0, std^2), std = sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010; the
                   "Gaussian Glorot" of the LTH paper's LeNet and Conv-2/4/6).
  xavier-uniform   U(-b, b), b = sqrt(6 / (fan_in + fan_out)).
fan_in = in_features (linear) or in_channels/groups * kernel size (conv); fan_out likewise with
the output channels. As in OpenLTH, only conv/linear *weights* change; biases keep PyTorch's
default.

BatchNorm (`--bn-init`, OpenLTH's `batchnorm_init`):
  default / fixed   weight 1, bias 0 (PyTorch's own; OpenLTH `fixed`);
  uniform           weight U(0, 1), bias 0 (OpenLTH's default for every model);
  oneone            weight 1, bias 1;
  positivenegative  weight U(-1, 1), bias 0.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import JackpotError
from .layers import WEIGHT_LAYERS

INITS = ("default", "kaiming-normal", "kaiming-uniform", "xavier-normal", "xavier-uniform")
BN_INITS = ("default", "fixed", "uniform", "oneone", "positivenegative")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fans(weight_shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv/linear weight of this shape (PyTorch's convention)."""
    shape = tuple(weight_shape)
    if len(shape) < 2:
        raise JackpotError(f"fan-in needs a weight of at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def init_std(init: str, weight_shape) -> float:
    """The standard deviation `init` gives a conv/linear weight of this shape."""
    fan_in, fan_out = fans(weight_shape)
    if init == "default":  # PyTorch's own (models that apply their paper's init differ)
        return 1.0 / math.sqrt(3 * fan_in)
    if init in ("kaiming-normal", "kaiming-uniform"):
        return math.sqrt(2.0 / fan_in)
    if init in ("xavier-normal", "xavier-uniform"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    raise JackpotError(f"unknown `model.init` {init!r}; choose {', '.join(INITS)}")


def sample_init(init: str, weight_shape, k: int, generator: torch.Generator) -> torch.Tensor:
    """k fresh draws from the distribution `init` gives a weight of this shape (DST regrowth)."""
    std = init_std(init, weight_shape)
    if init.endswith("normal"):
        return torch.randn(k, generator=generator) * std
    bound = std * math.sqrt(3.0)  # a uniform U(-b, b) has std b / sqrt(3)
    return (torch.rand(k, generator=generator) * 2 - 1) * bound


@torch.no_grad()
def apply_init(model: nn.Module, init: str = "default", bn_init: str = "default") -> nn.Module:
    """Re-initialise `model` in place (global RNG: callers seed it, as for model construction)."""
    if init not in INITS:
        raise JackpotError(f"unknown `model.init` {init!r}; choose {', '.join(INITS)}")
    if bn_init not in BN_INITS:
        raise JackpotError(f"unknown `model.bn_init` {bn_init!r}; choose {', '.join(BN_INITS)}")
    for module in model.modules():
        if init != "default" and isinstance(module, WEIGHT_LAYERS):
            w = module.weight
            std = init_std(init, w.shape)
            if init.endswith("normal"):
                w.normal_(0.0, std)
            else:
                w.uniform_(-std * math.sqrt(3.0), std * math.sqrt(3.0))
        elif bn_init not in ("default", "fixed") and isinstance(module, _NORMS) and module.affine:
            if bn_init == "uniform":
                module.weight.uniform_(0.0, 1.0)
                module.bias.zero_()
            elif bn_init == "oneone":
                module.weight.fill_(1.0)
                module.bias.fill_(1.0)
            else:  # positivenegative
                module.weight.uniform_(-1.0, 1.0)
                module.bias.zero_()
    return model
