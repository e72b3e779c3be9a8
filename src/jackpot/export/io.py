"""Compact files for exported models: every exported layer's weight as CSR (values + int32
indices), whatever form it runs in, or whole where that is smaller (a weight over about half
dense: 8 bytes per kept fp32 weight against 4 per weight), plus the rest of the state dict and a
small spec.

File = torch.save of plain tensors, str, int, float, lists and dicts, read back with
torch.load(weights_only=True). The architecture is rebuilt from the jackpot.models zoo by name
(`arch`: name, input_shape, num_classes), then each exported layer is put back in its saved
format. No pickled code, no training code path.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import JackpotError
from ..models import create_model
from ..store import atomic_torch_save, safe_torch_load
from ..sparse.channel_conv import CONVS, ExportedChannelConv
from .exporter import _set_module
from .kernels import build_linear, csr_parts, csr_to_dense, linear_weight

KIND = "jackpot-export"
VERSION = 1


def _weight(mod: nn.Module) -> torch.Tensor:
    if isinstance(mod, ExportedChannelConv):
        return mod.dense_weight()
    return mod.weight.detach() if isinstance(mod, CONVS) else linear_weight(mod)


def save_exported(module: nn.Module, path: str | Path, arch: dict | None = None) -> int:
    """Write `module` (from export_model) to `path`; returns the file size in bytes."""
    arch = arch or getattr(module, "export_arch", None)
    if not arch or not {"name", "input_shape", "num_classes"} <= set(arch):
        raise JackpotError("save_exported needs arch={name, input_shape, num_classes} of the "
                           "jackpot.models model (pass it to export_model or save_exported)")
    layers, prefixes = {}, []
    for name, mod in module.named_modules():
        info = getattr(mod, "export_info", None)
        if info is None or not (isinstance(mod, CONVS + (ExportedChannelConv,)) or hasattr(mod, "in_features")):
            continue  # unsupported layers go to the dense state dict below
        w = _weight(mod)
        crow, col, values = csr_parts(w.reshape(w.shape[0], -1))
        bias = getattr(mod, "bias", None)
        layers[name] = {"format": info["format"], "shape": list(w.shape),
                        "bias": None if bias is None else bias.detach().clone(),
                        "times": {k: float(v) for k, v in info["times"].items()},
                        "nnz": int(info["nnz"]), "note": info.get("note", "")}
        csr_bytes = sum(t.numel() * t.element_size() for t in (crow, col, values))
        if csr_bytes < w.numel() * w.element_size():
            layers[name].update(crow=crow, col=col, values=values.clone())
        else:  # a dense enough weight is smaller stored whole than as values + indices
            layers[name]["weight"] = w.detach().clone().contiguous()
        prefixes.append(f"{name}.")
    state = {k: v for k, v in module.state_dict().items() if not k.startswith(tuple(prefixes))}
    atomic_torch_save({"kind": KIND, "version": VERSION,
                       "arch": {"name": arch["name"], "input_shape": list(arch["input_shape"]),
                                "num_classes": int(arch["num_classes"])},
                       "batch_size": int(getattr(module, "export_batch_size", 0)),
                       "layers": layers, "state": state}, path)
    return Path(path).stat().st_size


def load_exported(path: str | Path) -> nn.Module:
    """The inference module saved by save_exported, each layer in its saved format."""
    if not isinstance(path, (str, Path)):
        raise JackpotError(f"load_exported takes the path of a file written by save_exported, "
                           f"got a {type(path).__name__}")
    data = safe_torch_load(path, what="exported model")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise JackpotError(f"{path} is not a jackpot exported model")
    if data.get("version") != VERSION:
        raise JackpotError(f"{path}: exported-model format version {data.get('version')} "
                           f"is not supported (this jackpot reads {VERSION})")
    try:
        return _rebuild(data, path)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        # a damaged or hand-made file: missing entries, wrong types, tensors that do not fit
        raise JackpotError(f"{path} is a damaged jackpot exported model ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:120]})") from None


def _rebuild(data: dict, path) -> nn.Module:

    arch = data["arch"]
    model = create_model(arch["name"], tuple(arch["input_shape"]), arch["num_classes"])
    model.eval().requires_grad_(False)
    for name, spec in data["layers"].items():
        if "weight" in spec:
            w = spec["weight"].reshape(spec["shape"])
        else:
            w = csr_to_dense(spec["crow"], spec["col"], spec["values"],
                             (spec["shape"][0], math.prod(spec["shape"][1:]))).reshape(spec["shape"])
        mod = model.get_submodule(name)
        if isinstance(mod, CONVS):
            with torch.no_grad():
                mod.weight.copy_(w)
                if spec["bias"] is not None:
                    mod.bias.copy_(spec["bias"])
            new = mod
            if spec["format"] == "channels":
                new = ExportedChannelConv(mod, w.ne(0)).requires_grad_(False)
                _set_module(model, name, new)
        else:
            new = build_linear(spec["format"], w, spec["bias"])
            _set_module(model, name, new)
        new.export_info = {"format": spec["format"], "nnz": spec["nnz"], "times": spec["times"],
                           "note": spec["note"]}
    missing, unexpected = model.load_state_dict(data["state"], strict=False)
    prefixes = tuple(f"{n}." for n in data["layers"])
    if unexpected or [k for k in missing if not k.startswith(prefixes)]:
        raise JackpotError(f"{path} does not match model {arch['name']} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    model.export_batch_size = data["batch_size"]
    model.export_arch = arch
    return model

