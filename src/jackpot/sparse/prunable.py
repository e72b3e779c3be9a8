"""Which parameters a mask covers: conv and linear weights by default."""
from __future__ import annotations

from torch import nn

from ..errors import JackpotError
from ..models.layers import WEIGHT_LAYERS


def weight_layers(model: nn.Module) -> list[str]:
    """Module names of conv/linear layers, in registration (data-flow) order."""
    return [name for name, mod in model.named_modules() if isinstance(mod, WEIGHT_LAYERS)]


def prunable_names(model: nn.Module, keep_first: bool = False, keep_output: bool = False,
                   keep_layers: list[str] | tuple[str, ...] = (), include_bias: bool = False) -> list[str]:
    """Parameter names to mask. The first layer is the first conv/linear module, the output
    layer the last Linear (the model zoo registers modules in data-flow order)."""
    layers = weight_layers(model)
    if not layers:
        raise JackpotError("the model has no conv or linear layer to prune")
    missing = [k for k in keep_layers if k not in dict(model.named_modules())]
    if missing:
        raise JackpotError(f"`masks.keep_layers` names no module of the model: {', '.join(missing)} "
                           f"(layers: {', '.join(layers)})")
    dense = set(keep_layers)
    if keep_first:
        dense.add(layers[0])
    if keep_output:
        linears = [n for n in layers if isinstance(model.get_submodule(n), nn.Linear)]
        dense.add(linears[-1] if linears else layers[-1])
    names = []
    for layer in layers:
        if layer in dense:
            continue
        module = model.get_submodule(layer)
        prefix = f"{layer}." if layer else ""
        names.append(prefix + "weight")
        if include_bias and getattr(module, "bias", None) is not None:
            names.append(prefix + "bias")
    if not names:
        raise JackpotError("every layer is kept dense: nothing left to prune")
    return names


def output_layer(model: nn.Module) -> str:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else weight_layers(model)[-1]


def layer_of(param_name: str) -> str:
    return param_name.rpartition(".")[0]


def check_layer_names(model: nn.Module, names) -> None:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules and n not in dict(model.named_parameters())]
    if missing:
        raise JackpotError(f"no layer named {', '.join(missing)} in the model "
                           f"(layers: {', '.join(weight_layers(model))})")


