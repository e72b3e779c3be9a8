"""`jackpot bench`: what a sparse model really runs at, dense vs masked dense vs real sparse.

End to end, forward only and forward+backward, at one batch size, 1 thread by default,
interleaved rounds and medians (export.time_interleaved):
  dense      the same network with every weight present (what a dense baseline costs);
  masked     the usual research code: weight * mask inside every forward (and its backward);
  sparse     forward: the exported model (each layer in its fastest measured form);
             forward+backward: masked Linear layers replaced by SparseLinear (only active weights).
The ideal speedup 1/(1 - s) is printed beside each measured ratio. Everything runs on the model's
device and dtype, timed by sparse.timing (synchronized on CUDA); the thread count is CPU-only.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JackpotError
from ..sparse import Masks
from .exporter import _set_module, export_model, summary
from ..sparse.sparse_linear import SparseLinear
from ..sparse.timing import threads_apply, time_interleaved


class _MaskedForward(nn.Module):
    """Wraps a layer so that its weight is multiplied by the mask in every call (research code)."""

    def __init__(self, layer: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.layer = layer
        self.mask = mask.to(device=layer.weight.device, dtype=layer.weight.dtype)

    def forward(self, x):
        w = self.layer.weight * self.mask
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


def _swap(model: nn.Module, masks: Masks, make) -> nn.Module:
    out = copy.deepcopy(model)
    for name, m in masks.items():
        layer_name, _, leaf = name.rpartition(".")
        if leaf != "weight":
            continue
        layer = out.get_submodule(layer_name)
        replacement = make(layer, m)
        if replacement is not None:
            _set_module(out, layer_name, replacement)
    return out


def benchmark(model: nn.Module, masks: Masks, input_shape, batch_size: int = 1, threads: int = 1,
              rounds: int = 7, num_classes: int | None = None) -> dict:
    if batch_size <= 0:
        raise JackpotError(f"--batch-size must be positive, got {batch_size}")
    if not masks:
        raise JackpotError("nothing to benchmark: no masks")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = copy.deepcopy(model).eval()
        p0 = next(model.parameters())
        device = p0.device
        with torch.no_grad():
            params = dict(model.named_parameters())
            for n, m in masks.items():
                params[n].mul_(m.to(device=params[n].device, dtype=params[n].dtype))
        # drawn on the CPU as always (the same random stream on every device), then moved
        x = torch.randn(batch_size, *input_shape).to(device=device, dtype=p0.dtype)
        exported = export_model(model, masks, batch_size, threads=threads, rounds=rounds,
                                input_shape=tuple(input_shape))  # convs timed at the inputs they see
        masked = _swap(model, masks, lambda layer, m: _MaskedForward(layer, m)
                       if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)) else None)
        sparse_train = _swap(model, masks, lambda layer, m: SparseLinear.from_dense(layer, m)
                             if isinstance(layer, nn.Linear) else None)
        with torch.no_grad():
            fwd = time_interleaved({"dense": lambda: model(x), "masked": lambda: masked(x),
                                    "sparse": lambda: exported(x)}, rounds=rounds, device=device)
        y = torch.randint(0, num_classes or model(x).shape[1], (batch_size,)).to(device)

        def step(net):
            def run():
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
            return run
        for net in (model, masked, sparse_train):
            net.train().requires_grad_(True)
        train = time_interleaved({"dense": step(model), "masked": step(masked), "sparse": step(sparse_train)},
                                 rounds=rounds, device=device)
    finally:
        torch.set_num_threads(prev)
    density = masks.density()
    return {"batch_size": batch_size, "threads": threads, "density": density, "device": str(device),
            "dtype": str(p0.dtype).removeprefix("torch."), "threads_apply": threads_apply(device),
            "ideal": 1.0 / max(density, 1e-12),
            "forward": {k: {"seconds": v, "speedup": fwd["dense"] / v} for k, v in fwd.items()},
            "forward_backward": {k: {"seconds": v, "speedup": train["dense"] / v} for k, v in train.items()},
            "layers": summary(exported)}


def format_benchmark(r: dict) -> str:
    where = (f"{r['threads']} thread(s)" if r.get("threads_apply", True)
             else f"{r['device']} (the CPU thread count does not apply)")
    if r.get("dtype", "float32") != "float32":
        where += f", {r['dtype']}"
    lines = [f"batch {r['batch_size']}, {where}, {100 * r['density']:.1f}% of prunable "
             f"weights kept (ideal speedup 1/(1-s) = {r['ideal']:.1f}x)", "",
             f"{'layer':<24} {'format':<7} {'nnz':>10} {'dense KiB':>10} {'stored KiB':>10} {'fwd speedup':>12}"]
    for l in r["layers"]:
        sp = f"{l['speedup']:.2f}x" if l["speedup"] else "-"
        lines.append(f"{l['name']:<24} {l['format']:<7} {l['nnz']:>10,} {l['dense_bytes'] / 1024:>10.1f} "
                     f"{l['stored_bytes'] / 1024:>10.1f} {sp:>12}")
    lines += ["", f"{'end to end':<18} {'dense ms':>9} {'masked':>16} {'real sparse':>16}   ideal"]
    for key, label in (("forward", "forward"), ("forward_backward", "forward+backward")):
        d = r[key]
        lines.append(f"{label:<18} {1e3 * d['dense']['seconds']:>9.3f} "
                     f"{1e3 * d['masked']['seconds']:>7.3f} ({d['masked']['speedup']:.2f}x) "
                     f"{1e3 * d['sparse']['seconds']:>7.3f} ({d['sparse']['speedup']:.2f}x)   {r['ideal']:.1f}x")
    return "\n".join(lines)
