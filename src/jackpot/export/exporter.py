"""export_model: bake masks and give each masked Linear the form measured fastest here.

Per masked Linear, candidates (dense, csr, rows, bsr4/bsr16 where they apply) are timed on a
random batch of the expected size, in interleaved rounds (random order each round), and the
median time per call decides (sparse.timing: synchronized on CUDA). Inputs and masks take the
weight's device and dtype; a form with no kernel there (CSR in bf16 on the CPU) is not a candidate.
A conv whose mask empties whole output or input channels (channel pruning, or channels found
empty) is also tried as the smaller dense conv over the kept channels (`channels`,
sparse.channel_conv), timed against the dense conv at the input it sees for the model's
`input_shape` (from `arch`); other convolutions are exported dense with the mask baked in: on this
kind of CPU no stock sparse conv beats oneDNN on unstructured masks below ~98%
(docs/performance.md).
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from ..errors import JackpotError
from ..sparse.masks import Masks
from .kernels import block_size, build_linear, rows_applicable
from ..sparse.channel_conv import CONVS, ExportedChannelConv, kept_channels, removable
from ..sparse.sparse_linear import SparseLinear
from ..sparse.timing import time_interleaved

log = logging.getLogger("jackpot.export")

FORMATS = ("dense", "csr", "rows", "bsr", "channels")


def _candidates(weight: torch.Tensor, formats) -> list[str]:
    out = ["dense"]  # always possible, and the reference the others are timed against
    if "csr" in formats:
        out.append("csr")
    if "rows" in formats and rows_applicable(weight):
        out.append("rows")
    if "bsr" in formats:
        b = block_size(weight.ne(0))
        if b:
            out.append(f"bsr{b}")
    return out


def _guess(cands: list[str], weight: torch.Tensor, batch: int) -> str:
    """measure=False: the defaults of docs/performance.md (CSR from ~90% on layers >= 100k weights,
    BSR for block masks at batch >= 16, a smaller dense layer when it is at most half the size)."""
    n = weight.numel()
    density = int(weight.ne(0).sum()) / max(1, n)
    nz = weight.ne(0)
    sub = int(nz.any(1).sum()) * int(nz.any(0).sum())
    bsr = [c for c in cands if c.startswith("bsr")]
    if bsr and batch >= 16 and density <= 0.5:
        return bsr[0]
    if "csr" in cands and density <= 0.1 and n >= 100_000:
        return "csr"
    if "rows" in cands and sub <= n // 2:
        return "rows"
    if "dense" in cands:
        return "dense"
    return cands[-1]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _layer_masks(model: nn.Module, masks: Masks) -> dict[str, dict[str, torch.Tensor]]:
    """Group parameter masks by module: {module name: {param leaf: mask}}."""
    Masks(masks).check_against(model)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, m in masks.items():
        layer, _, leaf = name.rpartition(".")
        out.setdefault(layer, {})[leaf] = m.to(torch.bool)
    return out


def export_model(model: nn.Module, masks: Masks | dict | None, batch_size: int, *,
                 formats=FORMATS, measure: bool = True, threads: int = 1, rounds: int = 7,
                 arch: dict | None = None, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """An inference copy of `model` (eval mode, no grads) with masks baked in and each masked
    Linear in its fastest measured form for `batch_size` inputs at `threads` threads (CPU threads:
    on a GPU the count does not apply).

    `formats` limits the sparse forms tried (dense is always the fallback). `arch` = {"name",
    "input_shape", "num_classes"} of the jackpot.models model, kept for save_exported; its
    input_shape (or `input_shape`) gives the inputs channel-removed convs are timed at.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise JackpotError(f"export batch size must be a positive int, got {batch_size!r}")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise JackpotError(f"unknown export format(s) {', '.join(sorted(unknown))} "
                           f"(choose from {', '.join(FORMATS)})")
    out = copy.deepcopy(model).eval().requires_grad_(False)
    # SparseLinear layers (sparse training) export like a masked Linear.
    masks = Masks(masks or {})
    for name, mod in list(out.named_modules()):
        if isinstance(mod, SparseLinear):
            _set_module(out, name, mod.to_dense().requires_grad_(False))
            masks[f"{name}.weight" if name else "weight"] = mod.mask
    if not masks:
        raise JackpotError("nothing to export: no masks given and the model has no SparseLinear layer")
    input_shape = input_shape or (arch or {}).get("input_shape")
    layer_masks = _layer_masks(out, masks)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        conv_inputs = _conv_inputs(out, layer_masks, batch_size, input_shape) if measure else {}
        for name, leaf_masks in layer_masks.items():
            mod = out.get_submodule(name) if name else out
            nnz = {leaf: int(m.sum()) for leaf, m in leaf_masks.items()}
            with torch.no_grad():  # bake: the zeros become real zeros, no W*mask per call
                for leaf, m in leaf_masks.items():
                    p = getattr(mod, leaf)
                    p.mul_(m.to(device=p.device, dtype=p.dtype))
            if isinstance(mod, nn.Linear) and "weight" in leaf_masks:
                new = _export_linear(mod, batch_size, formats, measure, rounds)
                new.export_info["nnz"] = nnz["weight"]
                if name:
                    _set_module(out, name, new)
                else:  # the model is a bare Linear
                    out = new
            elif (isinstance(mod, CONVS) and "weight" in leaf_masks and "channels" in formats
                  and removable(mod, leaf_masks["weight"])):
                new = _export_conv(mod, leaf_masks["weight"], conv_inputs.get(name), measure, rounds)
                new.export_info["nnz"] = nnz["weight"]
                if name:
                    _set_module(out, name, new)
                else:  # the model is a bare conv
                    out = new
            elif isinstance(mod, CONVS + (nn.Linear,)):  # convs; or only a bias was masked
                note = _empty_channels(mod) if isinstance(mod, CONVS) else ""
                mod.export_info = {"format": "dense", "nnz": nnz.get("weight", mod.weight.numel()),
                                   "times": {}, "note": note}
            else:
                log.warning("jackpot export: %s (%s) has a mask but no sparse kernel; exported "
                            "dense with the mask baked in", name or "<root>", type(mod).__name__)
                mod.export_info = {"format": "dense", "nnz": sum(nnz.values()), "times": {},
                                   "note": "unsupported layer type"}
    finally:
        torch.set_num_threads(prev)
    out.export_batch_size = batch_size
    out.export_arch = dict(arch) if arch else None
    return out


def _conv_inputs(model: nn.Module, layer_masks: dict, batch: int, input_shape) -> dict[str, tuple]:
    """The input shape each masked conv sees in a forward of `batch` inputs of `input_shape`."""
    if not input_shape:
        return {}
    seen, hooks = {}, []

    def note(name, inputs) -> None:  # a pre-hook's return value would replace the inputs
        seen.setdefault(name, tuple(inputs[0].shape))

    for name in layer_masks:
        mod = model.get_submodule(name) if name else model
        if isinstance(mod, CONVS):
            hooks.append(mod.register_forward_pre_hook(lambda m, inputs, n=name: note(n, inputs)))
    try:
        w = next(model.parameters())
        with torch.no_grad():
            model(torch.randn(batch, *input_shape).to(device=w.device, dtype=w.dtype))
    finally:
        for h in hooks:
            h.remove()
    return seen


def _export_conv(conv: nn.Module, mask: torch.Tensor, input_shape, measure: bool, rounds: int) -> nn.Module:
    """The baked dense conv or its channel-removed form, whichever ran faster at `input_shape`
    (without a measurement: channels when it keeps at most half of the filters' channels)."""
    small = ExportedChannelConv(conv, mask)
    small.requires_grad_(False)
    times = {}
    if measure and input_shape:
        x = torch.randn(input_shape).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            times = time_interleaved({"dense": lambda: conv(x), "channels": lambda: small(x)},
                                     rounds=rounds, device=conv.weight.device)
        choice = min(times, key=times.get)
    else:
        out, inp = kept_channels(mask)
        choice = "channels" if out.numel() * inp.numel() * 2 <= conv.out_channels * conv.in_channels else "dense"
    new = small if choice == "channels" else conv
    new.export_info = {"format": choice, "times": times, "note": _empty_channels(conv)}
    return new


def _empty_channels(conv: nn.Module) -> str:
    nz = conv.weight.ne(0)
    out, inp = kept_channels(nz)
    per_group_in = conv.weight.shape[1]  # in_channels / groups: a grouped conv's weight sees its group only
    parts = [f"{total - kept.numel()} of {total} {what} channels empty"
             for kept, total, what in ((out, conv.out_channels, "output"),
                                       (inp, per_group_in, "input" if conv.groups == 1 else "per-group input"))
             if kept.numel() < total]
    if parts:
        return ", ".join(parts) + ("" if conv.groups == 1 else " (grouped conv: exported dense)")
    return "" if bool(nz.all()) else "unstructured mask: no whole empty channel, dense"


def _export_linear(lin: nn.Linear, batch: int, formats, measure: bool, rounds: int) -> nn.Module:
    w = lin.weight.detach()
    b = None if lin.bias is None else lin.bias.detach()
    cands = _candidates(w, formats)
    if "dense" not in formats and len(cands) > 1:
        cands = cands[1:]  # the caller excluded dense; it stays only as the last resort
    mods = {c: build_linear(c, w, b) for c in cands}
    times = {}
    if measure and len(mods) > 1:
        # drawn on the CPU as always (the same random stream on every device), then moved
        x = torch.randn(batch, lin.in_features).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mods = {c: m for c, m in mods.items() if _runs(m, x)} or {"dense": build_linear("dense", w, b)}
            if len(mods) > 1:
                times = time_interleaved({c: (lambda m=m: m(x)) for c, m in mods.items()}, rounds=rounds,
                                         device=w.device)
        choice = min(times, key=times.get) if times else next(iter(mods))
    else:
        choice = _guess(cands, w, batch) if len(cands) > 1 else cands[0]
    new = mods[choice]
    new.export_info = {"format": choice, "times": times, "note": ""}
    return new


def _runs(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether this device/dtype has a kernel for the form (MKL's CSR/BSR have none for bf16)."""
    try:
        module(x)
        return True
    except (RuntimeError, NotImplementedError) as e:
        log.info("jackpot export: %s skipped on %s %s: %s", getattr(module, "fmt", "?"), x.device,
                 x.dtype, str(e).splitlines()[0])
        return False


def _tensor_bytes(module: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):  # a channel conv holds a smaller conv
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def summary(exported: nn.Module) -> list[dict]:
    """Per exported layer: name, format, nnz, dense bytes, stored bytes, measured speedup vs dense
    (None where it was not measured), and a note."""
    rows = []
    for name, mod in exported.named_modules():
        info = getattr(mod, "export_info", None)
        if info is None:
            continue
        if hasattr(mod, "dense_weight"):  # a sparse form: what the dense layer would hold
            w = mod.dense_weight()
            dense = w.numel() * w.element_size() + (0 if mod.bias is None else mod.bias.numel() * w.element_size())
        else:
            dense = _tensor_bytes(mod)
        times = info["times"]
        speedup = times["dense"] / times[info["format"]] if "dense" in times else None
        rows.append({"name": name, "format": info["format"], "nnz": info["nnz"], "dense_bytes": dense,
                     "stored_bytes": _tensor_bytes(mod), "speedup": speedup,
                     "times": dict(times), "note": info.get("note", "")})
    return rows
