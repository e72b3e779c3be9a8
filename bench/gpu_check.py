"""The library-level checks of bench/gpu_check.sh, on one device: each asserts numbers, prints one
line, and exits non-zero on any failure.

  python bench/gpu_check.py sparse-linear|export|syncs DEVICE [--tiny]
"""
from __future__ import annotations

import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from jackpot.data import augment_batch
from jackpot.export import SparseLinear, export_model, summary
from jackpot.export.bench import benchmark, format_benchmark
from jackpot.sparse import Masks, Sparsifier
from jackpot.sparse.dst import UpdateSchedule, make_method


def _masks(model: nn.Module, density: float, seed: int = 0) -> Masks:
    g = torch.Generator().manual_seed(seed)
    return Masks({n: torch.rand(p.shape, generator=g) < density
                  for n, p in model.named_parameters() if n.endswith("weight")})


def sparse_linear(device: torch.device, width: int) -> None:
    """A SparseLinear MLP trains like the masked dense one (fp32: same losses; bf16: it runs and
    its gradients match the dense bf16 reference), and a DST-style update_mask keeps it working."""
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        torch.manual_seed(0)
        dense = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)).to(device, dtype)
        masks = _masks(dense, 0.1)
        with torch.no_grad():
            for n, p in dense.named_parameters():
                if n in masks:
                    p.mul_(masks[n].to(device))
        sparse = nn.Sequential(*[SparseLinear.from_dense(m, masks[f"{i}.weight"]) if isinstance(m, nn.Linear) else m
                                 for i, m in enumerate(dense)])
        dev_masks = {n: m.to(device=device, dtype=dtype) for n, m in masks.items()}
        opt_d = torch.optim.SGD(dense.parameters(), lr=0.05)
        opt_s = torch.optim.SGD(sparse.parameters(), lr=0.05)
        x = torch.randn(64, width).to(device, dtype)
        y = torch.randint(0, 10, (64,)).to(device)
        losses = []
        for _ in range(20):
            for net, opt in ((dense, opt_d), (sparse, opt_s)):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x).float(), y)
                loss.backward()
                if net is dense:
                    for n, p in net.named_parameters():
                        if n in dev_masks:
                            p.grad.mul_(dev_masks[n])
                opt.step()
                losses.append(float(loss.detach()))
        ld, ls = losses[0::2], losses[1::2]
        assert ls[-1] < ls[0], f"{dtype}: SparseLinear loss did not fall: {ls[0]:.4f} -> {ls[-1]:.4f}"
        assert abs(ld[0] - ls[0]) <= tol * max(1.0, abs(ld[0])), f"{dtype}: first loss {ls[0]} vs dense {ld[0]}"
        if dtype == torch.float32:
            assert abs(ld[-1] - ls[-1]) <= 1e-3, f"fp32 training diverged from masked dense: {ls[-1]} vs {ld[-1]}"
        layer = sparse[0]
        grown = layer.mask.clone()
        grown.view(-1)[: width] = True  # a drop/grow: new positions start at 0
        layer.update_mask(grown.cpu())  # a CPU mask, as DST hands it over
        assert {t.device.type for t in layer.buffers()} == {device.type}
        sparse(x).float().sum().backward()
        print(f"sparse-linear {dtype}: loss {ls[0]:.4f} -> {ls[-1]:.4f} (masked dense {ld[-1]:.4f}); "
              f"update_mask ok on {device}")


def export(device: torch.device, width: int) -> None:
    """export_model (measured on the device) and jackpot bench's benchmark() on the device."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)).to(device)
    masks = _masks(model, 0.05)
    out = export_model(model, masks, 16, rounds=3)
    x = torch.randn(16, width).to(device)
    with torch.no_grad():
        ref = F.linear(model[2](F.linear(x, model[1].weight * masks["1.weight"].to(device), model[1].bias)),
                       model[3].weight * masks["3.weight"].to(device), model[3].bias)
        got = out(x)
    assert got.device.type == device.type and torch.allclose(got, ref, atol=1e-4), float((got - ref).abs().max())
    print("export formats:", ", ".join(f"{r['name']}={r['format']}" for r in summary(out)))
    r = benchmark(model, masks, (width,), batch_size=16, rounds=3, num_classes=10)
    assert r["device"].startswith(device.type)
    print(format_benchmark(r))


def syncs(device: torch.device, width: int) -> None:
    """CUDA only: crop-and-flip steps make no host sync (sync debug mode "error" raises on one), and
    the syncs of one DST update of a 4-layer MLP are counted per method (sync debug mode "warn")."""
    x = torch.randn(128, 3, 32, 32, device=device)
    augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))  # warm-up: pinned-memory pool
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for seed in range(5):
            augment_batch(x, "crop-flip", torch.Generator().manual_seed(seed))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    print("crop-flip: 5 steps, no host sync")
    for method in ("rigl", "set", "snfs", "dsr"):
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(width, width) for _ in range(4)]).to(device)
        masks = _masks(model, 0.1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sp = Sparsifier(model, masks).attach(opt)
        dst = make_method(method, UpdateSchedule(delta_t=2, alpha=0.3, t_end=100))
        xb = torch.randn(32, width, device=device)
        for step in (1, 2):
            opt.zero_grad()
            model(xb).square().mean().backward()
            torch.cuda.synchronize(device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    dst.after_backward(step, model, sp)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            n = sum("synchroniz" in str(w.message) for w in caught)
            if step == 1:
                assert n == 0, f"{method}: a plain step synced {n} times"
            opt.step()
        print(f"{method}: one update of 4 layers: {n} host syncs")


if __name__ == "__main__":
    what, device = sys.argv[1], torch.device(sys.argv[2])
    width = 64 if "--tiny" in sys.argv else 1024
    {"sparse-linear": sparse_linear, "export": export, "syncs": syncs}[what](device, width)
