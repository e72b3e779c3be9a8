"""Masked training step vs a plain dense PyTorch step, in one process (targets: LeNet-300-100
<= 1.03x, conv net <= 1.01x). Masks at 90% sparsity, enforced by jackpot's Sparsifier.

  python bench/masking_overhead.py [--quick] [--device cuda]"""
from __future__ import annotations

import copy
import json
import sys

import torch
import torch.nn.functional as F

from common import interleaved_ratio, option, setup_threads
from jackpot.config import TrainConfig
from jackpot.models import create_model
from jackpot.train import build_optimizer
from jackpot.sparse import Masks, Sparsifier, prunable_names, prune

CASES = [  # model, input shape, batch, optimizer, rounds, reps
    ("lenet-300-100", (1, 28, 28), 60, "adam", 30, 40),
    ("lenet-300-100", (1, 28, 28), 60, "sgd", 30, 40),
    ("conv-4", (3, 32, 32), 60, "adam", 10, 2),
]


def step_fn(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def bench_case(name, shape, batch, optimizer, rounds, reps, device="cpu"):
    torch.manual_seed(0)
    dense = create_model(name, shape, 10).to(device)
    masked = copy.deepcopy(dense)
    x, y = torch.randn(batch, *shape).to(device), torch.randint(0, 10, (batch,)).to(device)
    train = {"adam": TrainConfig(optimizer="adam", lr=1e-3),
             "sgd": TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)}[optimizer]
    make_opt = lambda p: build_optimizer(p, train)  # the same (fused) optimizer for both
    opt_dense, opt_masked = make_opt(dense.parameters()), make_opt(masked.parameters())
    masks = Masks.ones_for(masked, prunable_names(masked))
    masks = prune({n: torch.rand(m.shape).to(m.device) for n, m in masks.items()}, masks, 0.9)
    Sparsifier(masked, masks).attach(opt_masked)
    candidates = {"dense": step_fn(dense, opt_dense, x, y), "masked": step_fn(masked, opt_masked, x, y)}
    for fn in candidates.values():  # warm-up: allocator, optimizer state
        fn(); fn()
    res = interleaved_ratio(candidates, "dense", rounds, reps, device=device)
    return {"model": name, "batch": batch, "optimizer": optimizer, "density": round(masks.density(), 3),
            "device": str(device),
            "dense_ms": 1e3 * res["dense"]["seconds"], "masked_ms": 1e3 * res["masked"]["seconds"],
            "ratio": res["masked"]["ratio"], "ratio_iqr": res["masked"]["iqr"]}


def main(quick: bool = False, device: str = "cpu") -> list[dict]:
    setup_threads(1)
    results = []
    for name, shape, batch, opt, rounds, reps in CASES:
        r = bench_case(name, shape, batch, opt, max(3, rounds // 3) if quick else rounds, reps, device)
        results.append(r)
        print(f"masked step / dense step  {name:<14} batch {batch} {opt:<5} density {r['density']:.2f}: "
              f"{r['ratio']:.3f}x (IQR {r['ratio_iqr'][0]:.3f}-{r['ratio_iqr'][1]:.3f}; "
              f"dense {r['dense_ms']:.2f} ms, masked {r['masked_ms']:.2f} ms)", flush=True)
    return results


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv, option(sys.argv, "--device", "cpu")), indent=1))
