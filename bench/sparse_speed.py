"""Real sparse execution vs dense, in one process (1 thread, interleaved rounds, medians of
per-round ratios t_dense / t_method; > 1 = faster). The ideal 1/(1-s) is printed beside each.

  python bench/sparse_speed.py [--quick] [--device cuda] [--width 1024]

Cases: 4-layer MLP (4 x Linear 4096x4096, ReLU) at 95/99%: training step (SparseLinear
fwd+bwd+SGD on values) and inference at batch 1; LeNet-300-100 at 98% inference at batch 1;
Conv-4 at 90% exported vs dense; and export end to end vs the best single-kernel model.
"""
from __future__ import annotations

import copy
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

from common import interleaved_ratio, option, setup_threads
from jackpot.export import SparseLinear, export_model, summary
from jackpot.models import create_model
from jackpot.sparse import Masks, prunable_names, prune

WIDTH, DEPTH, TRAIN_BATCH = 4096, 4, 64
DEVICE = torch.device("cpu")  # --device: models, inputs and the clock (synchronized on CUDA)


def random_masks(model, sparsity, seed=0):
    masks = Masks.ones_for(model, prunable_names(model))
    g = torch.Generator().manual_seed(seed)
    return prune({n: torch.rand(m.shape, generator=g).to(m.device) for n, m in masks.items()}, masks, sparsity)


def baked(model, masks):
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in out.named_parameters():
            if n in masks:
                p.mul_(masks[n].to(p.device))
    return out


def mlp():
    layers = []
    for i in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH)] + ([nn.ReLU()] if i < DEPTH - 1 else [])
    return nn.Sequential(*layers)


def masks_for(model, sparsity, seed=0):
    """Uniform random masks with exact counts on every Linear (fast: no sort over 16M scores)."""
    g = torch.Generator().manual_seed(seed)
    out = Masks()
    for n, p in model.named_parameters():
        if n.endswith("weight"):
            keep = round((1 - sparsity) * p.numel())
            flat = torch.zeros(p.numel(), dtype=torch.bool)
            flat[torch.randperm(p.numel(), generator=g)[:keep]] = True
            out[n] = flat.view(p.shape)
    return out


def train_step(model, params, x, target, after=None):
    opt = torch.optim.SGD(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), target).backward()
        opt.step()
        if after:
            after()
    return step


def line(label, res, base, ideal=None):
    for k, r in res.items():
        if k == base:
            continue
        extra = f"   (ideal {ideal:.0f}x)" if ideal else ""
        print(f"  {label:<34} {k:<12} {1 / r['ratio']:7.2f}x  [IQR {1 / r['iqr'][1]:.2f}-"
              f"{1 / r['iqr'][0]:.2f}]  {r['seconds'] * 1e3:9.3f} ms{extra}")


def speedups(res, base):
    return {k: {"speedup": 1 / r["ratio"], "ms": r["seconds"] * 1e3,
                "iqr": [1 / r["iqr"][1], 1 / r["iqr"][0]]} for k, r in res.items() if k != base}


def mlp_cases(sparsity, rounds):
    torch.manual_seed(0)
    dense = mlp().to(DEVICE)
    masks = masks_for(dense, sparsity)
    ideal = 1 / (1 - sparsity)
    out = {"ideal": ideal}
    # Training: dense step, masked-dense step (re-mask after SGD), SparseLinear step.
    x, target = torch.randn(TRAIN_BATCH, WIDTH).to(DEVICE), torch.randn(TRAIN_BATCH, WIDTH).to(DEVICE)
    masked = baked(dense, masks).train()
    ws = [masked.get_submodule(n.rpartition(".")[0]).weight for n in masks]
    fm = [m.float().to(DEVICE) for m in masks.values()]
    sparse = nn.Sequential(*[SparseLinear.from_dense(m, masks[f"{i}.weight"]) if isinstance(m, nn.Linear)
                             else m for i, m in enumerate(baked(dense, masks))])
    res = interleaved_ratio({
        "dense": train_step(dense, dense.parameters(), x, target),
        "masked": train_step(masked, masked.parameters(), x, target,
                             after=lambda: torch._foreach_mul_([w.data for w in ws], fm)),
        "sparse": train_step(sparse, sparse.parameters(), x, target),
    }, "dense", rounds=rounds, reps=1, device=DEVICE)
    line(f"MLP {DEPTH}x{WIDTH} train step B={TRAIN_BATCH} s={sparsity:.0%}", res, "dense", ideal)
    out["train"] = speedups(res, "dense")
    del masked, sparse, ws
    # Inference at batch 1: dense, masked forward (W*mask per call), exported.
    ref = baked(dense, masks)
    ex = export_model(dense, masks, 1)
    csr = export_model(dense, masks, 1, formats=("csr",), measure=False)
    mw = [(m.weight, fm[j], m.bias) for j, m in enumerate(l for l in dense if isinstance(l, nn.Linear))]

    def masked_forward(h):
        for j, (w, mk, b) in enumerate(mw):
            h = F.linear(h, w * mk, b)
            h = h.relu() if j < len(mw) - 1 else h
        return h
    x1 = torch.randn(1, WIDTH).to(DEVICE)
    with torch.no_grad():
        res = interleaved_ratio({"dense": lambda: ref(x1), "masked": lambda: masked_forward(x1),
                                 "exported": lambda: ex(x1), "all-csr": lambda: csr(x1)},
                                "dense", rounds=rounds * 3, reps=5, device=DEVICE)
    line(f"MLP {DEPTH}x{WIDTH} inference B=1 s={sparsity:.0%}", res, "dense", ideal)
    out["infer_b1"] = speedups(res, "dense")
    out["infer_b1"]["formats"] = [r["format"] for r in summary(ex)]
    out["export_vs_best_single_b1"] = out["infer_b1"]["exported"]["speedup"] / max(
        out["infer_b1"]["all-csr"]["speedup"], 1.0)
    return out


def end_to_end(name, model, masks, batch, shape, rounds, reps):
    """Exported (per-layer measured choice) vs every single-format model, same process."""
    x = torch.randn(batch, *shape).to(DEVICE)
    models = {"dense": baked(model, masks), "exported": export_model(model, masks, batch)}
    for fmt in ("csr", "rows", "bsr"):
        single = export_model(model, masks, batch, formats=(fmt,), measure=False)
        if any(r["format"].startswith(fmt) for r in summary(single)):  # skip where it never applies
            models[f"all-{fmt}"] = single
    with torch.no_grad():
        res = interleaved_ratio({k: (lambda m=m: m(x)) for k, m in models.items()}, "dense",
                                rounds=rounds, reps=reps, device=DEVICE)
    sp = speedups(res, "dense")
    best_single = max([1.0] + [v["speedup"] for k, v in sp.items() if k.startswith("all-")])
    sp["exported_vs_best_single"] = sp["exported"]["speedup"] / best_single
    sp["layers"] = [{k: r[k] for k in ("name", "format", "nnz", "dense_bytes", "stored_bytes", "speedup")}
                    for r in summary(models["exported"])]
    return res, sp


def main(quick: bool = False) -> dict:
    setup_threads(1)
    rounds = 3 if quick else 7
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(DEVICE),
               "width": WIDTH}
    for s in (0.95, 0.99):
        results[f"mlp_{int(s * 100)}"] = mlp_cases(s, rounds)
        print(f"  export end to end / best single kernel (B=1, s={s:.0%}): "
              f"{results[f'mlp_{int(s * 100)}']['export_vs_best_single_b1']:.2f}")

    torch.manual_seed(0)
    lenet = create_model("lenet-300-100").eval().to(DEVICE)
    masks = random_masks(lenet, 0.98)
    res, sp = end_to_end("lenet", lenet, masks, 1, (1, 28, 28), rounds * 5, 50)
    line("LeNet-300-100 inference B=1 s=98%", res, "dense", 50)
    print(f"  export end to end / best single kernel (LeNet B=1): {sp['exported_vs_best_single']:.2f}")
    for r in sp["layers"]:
        print(f"    {r['name']}: {r['format']:<6} nnz={r['nnz']:<7} {r['dense_bytes']:>9} B dense -> "
              f"{r['stored_bytes']:>8} B, layer speedup {r['speedup']:.2f}x")
    results["lenet_98_b1"] = sp

    for batch in (1, 64):
        torch.manual_seed(0)
        conv = create_model("conv-4").eval().to(DEVICE)
        masks = random_masks(conv, 0.9)
        res, sp = end_to_end("conv-4", conv, masks, batch, (3, 32, 32), rounds, 10 if batch == 1 else 1)
        line(f"Conv-4 inference B={batch} s=90%", res, "dense", 10)
        print(f"  export end to end / best single kernel (Conv-4 B={batch}): "
              f"{sp['exported_vs_best_single']:.2f}  "
              f"(formats: {', '.join(r['format'] for r in sp['layers'])})")
        results[f"conv4_90_b{batch}"] = sp
    return results


if __name__ == "__main__":
    DEVICE = torch.device(option(sys.argv, "--device", "cpu"))
    WIDTH = int(option(sys.argv, "--width", str(WIDTH)))
    out = main(quick="--quick" in sys.argv)
    if "--json" in sys.argv:
        print(json.dumps(out, indent=1, default=float))
