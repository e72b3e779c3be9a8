"""DST costs, 1 thread, interleaved repetitions in one process:
  - mask-update time as a share of training time at delta_t = 100: t_update / (100 * t_step);
  - per-step overhead of each method (its per-step callback work + masked step) vs a plain dense step.
Models: LeNet-300-100 (batch 60) and ResNet-20 (batch 128, CIFAR shape), 90% sparse, ERK."""
from __future__ import annotations

import copy
import json
import sys

import torch
import torch.nn.functional as F

from common import interleaved_ratio, setup_threads
from jackpot.config import TrainConfig
from jackpot.models import create_model
from jackpot.sparse import Sparsifier, prunable_names
from jackpot.sparse.distributions import layer_densities, random_masks
from jackpot.sparse.dst import METHODS, UpdateSchedule, make_method
from jackpot.train import build_optimizer

CASES = [("lenet-300-100", (1, 28, 28), 60, 20, 10), ("resnet-20", (3, 32, 32), 128, 4, 1)]


def main(quick: bool = False) -> list[dict]:
    setup_threads(1)
    results = []
    for name, shape, batch, rounds, reps in CASES:
        rounds = max(3, rounds // 3) if quick else rounds
        torch.manual_seed(0)
        base = create_model(name, shape, 10)
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        names = prunable_names(base)
        masks = random_masks(base, names, layer_densities("erk", base, names, 0.1), torch.Generator().manual_seed(0))
        train = TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9)
        steps, updaters = {}, {}

        def make_step(model, opt, sparsifier=None, method=None, counter=[0]):
            def step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                if method is not None:  # per-step work only: never an update step here
                    method.after_backward(1, model, sparsifier)
                opt.step()
            return step
        dense = copy.deepcopy(base)
        steps["dense"] = make_step(dense, build_optimizer(dense.parameters(), train))
        for m in METHODS:
            model = copy.deepcopy(base)
            opt = build_optimizer(model.parameters(), train)
            sp = Sparsifier(model, masks.clone()).attach(opt)
            method = make_method(m, UpdateSchedule(delta_t=100, alpha=0.3, t_end=10 ** 9))
            steps[m] = make_step(model, opt, sp, method)
            updaters[m] = (lambda method=method, model=model, sp=sp: method.update(100, model, sp))
        for fn in steps.values():
            fn(); fn()
        step_res = interleaved_ratio(steps, "dense", rounds, reps)
        upd_res = interleaved_ratio({"dense step": steps["dense"],
                                     **{m: u for m, u in updaters.items() if m != "static"}},
                                    "dense step", rounds, 1)
        for m in METHODS:
            share = 0.0 if m == "static" else upd_res[m]["seconds"] / (100 * step_res[m]["seconds"])
            r = {"model": name, "method": m, "step_ratio": step_res[m]["ratio"], "update_ms":
                 0.0 if m == "static" else 1e3 * upd_res[m]["seconds"], "update_share_dt100": share,
                 "dense_step_ms": 1e3 * step_res["dense"]["seconds"]}
            results.append(r)
            print(f"DST {name:<13} {m:<6} step vs dense {r['step_ratio']:.3f}x; one mask update "
                  f"{r['update_ms']:.1f} ms = {100 * share:.2f}% of training at delta_t=100 "
                  f"(dense step {r['dense_step_ms']:.1f} ms)", flush=True)
    return results


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv), indent=1))
