"""export_model: bake masks and give each masked Linear the form measured fastest here.

Per masked Linear, candidates (dense, csr, rows, bsr4/bsr16 where they apply) are timed on a
random batch of the expected size, in interleaved rounds (random order each round), and the
median time per call decides (sparse.timing: synchronized on CUDA). Inputs and masks take the
weight's device and dtype; a form with no kernel there (CSR in bf16 on the CPU) is not a candidate.
Convolutions are exported dense with the mask baked in: on this kind of CPU no stock sparse conv
beats oneDNN below ~98% (docs/performance.md).
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from ..errors import JackpotError
from ..sparse.masks import Masks
from .kernels import block_size, build_linear, rows_applicable
from ..sparse.sparse_linear import SparseLinear
from ..sparse.timing import time_interleaved

log = logging.getLogger("jackpot.export")

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
FORMATS = ("dense", "csr", "rows", "bsr")


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
                 arch: dict | None = None) -> nn.Module:
    """An inference copy of `model` (eval mode, no grads) with masks baked in and each masked
    Linear in its fastest measured form for `batch_size` inputs at `threads` threads (CPU threads:
    on a GPU the count does not apply).

    `formats` limits the sparse forms tried (dense is always the fallback). `arch` = {"name",
    "input_shape", "num_classes"} of the jackpot.models model, kept for save_exported.
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
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, leaf_masks in _layer_masks(out, masks).items():
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


def _empty_channels(conv: nn.Module) -> str:
    empty = int(conv.weight.flatten(1).ne(0).any(1).logical_not().sum())
    return f"{empty} of {conv.out_channels} output channels empty" if empty else ""


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
    for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
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
