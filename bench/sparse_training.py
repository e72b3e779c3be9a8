"""Sparse execution inside training (`--execution sparse`, issue 12), in one process, 1 thread,
masked and sparse runs interleaved (alternating order per repetition), medians:

  1. `jackpot sparse --method rigl` (in process: jackpot.procedures.run) on a 4-layer MLP of width
     4096 (4096-4096-4096-4096-10, synthetic 4096-feature npz), uniform 95% and 99%, 200 steps
     (B=64, Adam, one mask update at delta_t = 100), 2 repetitions: end-to-end
     wall-clock ratio masked/sparse (data, init, per-layer choice, mask updates, evaluation and
     files included), the median step-time ratio, test accuracy of both, and the bytes of
     parameters + optimizer state (sparse: values; plus its index buffers, reported apart).
  2. The RigL update on the sparse structure (dense weights and one dense gradient materialised,
     the unchanged RigL code, the rebuild) as a share of training time at delta_t = 100:
     (t_update_step - t_step) / (100 t_step), sparse and masked.
  3. LeNet-300-100 (synthetic 784-feature npz) and the MNIST-1D MLP (embedded MNIST-1D), RigL 90%
     ERK: end-to-end masked/sparse (the per-layer choice keeps layers where sparse loses dense).

  python bench/sparse_training.py [--quick]
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import setup_threads
from jackpot.config import DataConfig, ModelConfig, RunConfig, SparseConfig, TrainConfig
from jackpot.models import create_model
from jackpot.models.mlp import MLP
from jackpot.models.registry import register
from jackpot.procedures import run
from jackpot.sparse import Masks, Sparsifier, prunable_names
from jackpot.sparse.distributions import layer_densities, random_masks
from jackpot.sparse.dst import UpdateSchedule, make_method
from jackpot.sparse.execution import SparseExecution, choose_layers
from jackpot.sparse.sparse_linear import SparseLinear
from jackpot.train import build_optimizer

WIDTH, BATCH = 4096, 64


@register("bench-mlp-4096", description="bench only: 4-layer MLP of width 4096", input_shape=(WIDTH,),
          num_classes=10, family="mlp")
def _mlp_4096(input_shape, num_classes, width=1.0):
    return MLP(int(np.prod(input_shape)), (WIDTH, WIDTH, WIDTH), num_classes)


def synthetic_npz(path: Path, features: int, n_train: int, n_test: int, classes: int = 10, seed: int = 0) -> Path:
    """Gaussian classes around random centres: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, features)).astype(np.float32)
    y = rng.integers(0, classes, size=n_train + n_test)
    x = centres[y] + 3 * rng.normal(size=(n_train + n_test, features)).astype(np.float32)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


def end_to_end(base: RunConfig, reps: int, tmp: Path) -> dict:
    """Wall-clock of whole runs, masked and sparse alternating; ratios per repetition."""
    times = {"masked": [], "sparse": []}
    last = {}
    for rep in range(reps):
        for mode in (("masked", "sparse") if rep % 2 == 0 else ("sparse", "masked")):
            cfg = replace(base, train=replace(base.train, execution=mode))
            root = tmp / f"{mode}-{rep}"
            t0 = time.perf_counter()
            r = run(cfg, root=root, progress=lambda _: None)
            times[mode].append(time.perf_counter() - t0)
            done = json.loads((r.path / "train/done.json").read_text())
            last[mode] = {"done": done, "summary": json.loads((r.path / "summary.json").read_text()),
                          "final": torch.load(r.path / "train/final.pt", weights_only=True),
                          "mask": Masks.load(r.path / "train/mask.pt")}
            shutil.rmtree(root)
    ratios = [m / s for m, s in zip(times["masked"], times["sparse"])]
    out = {"seconds": {k: statistics.median(v) for k, v in times.items()},
           "wallclock_ratio": statistics.median(ratios), "ratios": ratios,
           "test_acc": {k: v["done"]["final"]["test_acc"] for k, v in last.items()},
           "sparse_layers": last["sparse"]["summary"]["execution"]["sparse"]}
    step = {k: v["done"].get("cost", {}).get("step_seconds_median") for k, v in last.items()}
    if all(step.values()):
        out["step_ratio"] = step["masked"] / step["sparse"]
        out["step_seconds"] = step
    cost = {k: v["done"].get("cost") for k, v in last.items()}
    if all(cost.values()):
        state = {k: c["param_bytes"] + c["optimizer_bytes"] for k, c in cost.items()}
        index = sum(sum(b.numel() * b.element_size() for b in SparseLinear.from_dense(_linear(last["sparse"], n),
                                                                                    last["sparse"]["mask"][n]).buffers())
                    for n in out["sparse_layers"])
        out["bytes"] = {**state, "sparse_index_buffers": index}
        out["bytes_ratio"] = state["sparse"] / state["masked"]
        out["bytes_ratio_with_index"] = (state["sparse"] + index) / state["masked"]
    return out


def _linear(run_files: dict, weight_name: str) -> torch.nn.Linear:
    w = run_files["final"][weight_name]
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w
    return lin


def update_share(density: float, rounds: int) -> dict:
    """One RigL update at delta_t = 100 vs the steps between updates, sparse and masked."""
    torch.manual_seed(0)
    x, y = torch.randn(BATCH, WIDTH), torch.randint(0, 10, (BATCH,))
    train = TrainConfig(optimizer="adam", lr=1e-3)
    out = {}
    for mode in ("sparse", "masked"):
        model = create_model("bench-mlp-4096", (WIDTH,), 10)
        names = prunable_names(model)
        masks = random_masks(model, names, layer_densities("uniform", model, names, density),
                             torch.Generator().manual_seed(0))
        method = make_method("rigl", UpdateSchedule(delta_t=100, alpha=0.3, t_end=10 ** 9))
        if mode == "sparse":
            sp = SparseExecution(model, masks, choose_layers(model, masks, x, lambda ps: build_optimizer(ps, train)))
            cb = sp.wrap(method)
        else:
            sp, cb = Sparsifier(model, masks), method
        opt = build_optimizer(model.parameters(), train)
        sp.attach(opt)

        def step(i):
            if hasattr(cb, "on_step_start"):
                cb.on_step_start(i, model, sp)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            cb.after_backward(i, model, sp)
            opt.step()
        step(101)
        step(100)  # warm-up of both
        plain, update = [], []
        for _ in range(rounds):
            for i, times in ((101, plain), (100, update)):
                t0 = time.perf_counter()
                step(i)
                times.append(time.perf_counter() - t0)
        t_step, t_update = statistics.median(plain), statistics.median(update)
        out[mode] = {"step_seconds": t_step, "update_step_seconds": t_update,
                     "share_at_delta_t_100": (t_update - t_step) / (100 * t_step)}
    return out


def main(quick: bool = False) -> dict:
    setup_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        steps = 60 if quick else 200  # two epochs; one mask update (step 100 of t_end 150) at delta_t 100
        npz = synthetic_npz(tmp / "mlp4096.npz", WIDTH, steps // 2 * BATCH, 500)
        for density in (0.05, 0.01):
            cfg = RunConfig(kind="sparse", data=DataConfig(dataset=f"npz:{npz}", batch_size=BATCH),
                            model=ModelConfig(model="bench-mlp-4096"),
                            train=TrainConfig(optimizer="adam", lr=1e-2, duration=f"{steps}it"),
                            sparse=SparseConfig(method="rigl", density=density, distribution="uniform",
                                                delta_t=steps // 2))
            res = end_to_end(cfg, 1 if quick else 2, tmp)
            results[f"mlp4096_rigl_{round(100 * (1 - density))}"] = res
            print(f"4096-MLP rigl {100 * (1 - density):.0f}%: end-to-end masked/sparse {res['wallclock_ratio']:.2f}x "
                  f"(step {res.get('step_ratio', float('nan')):.2f}x), test acc masked {res['test_acc']['masked']:.3f} "
                  f"sparse {res['test_acc']['sparse']:.3f}, bytes ratio {res.get('bytes_ratio', float('nan')):.3f} "
                  f"({res.get('bytes_ratio_with_index', float('nan')):.3f} with index buffers), "
                  f"sparse layers {res['sparse_layers']}", flush=True)
        for density in (0.05, 0.01):
            res = update_share(density, 2 if quick else 3)
            results[f"mlp4096_update_share_{round(100 * (1 - density))}"] = res
            print(f"4096-MLP RigL update share at delta_t=100, {100 * (1 - density):.0f}%: sparse "
                  f"{100 * res['sparse']['share_at_delta_t_100']:.2f}% (step {res['sparse']['step_seconds']:.3f}s), "
                  f"masked {100 * res['masked']['share_at_delta_t_100']:.2f}% "
                  f"(step {res['masked']['step_seconds']:.3f}s)", flush=True)
        lenet_npz = synthetic_npz(tmp / "lenet.npz", 784, 6000, 1000)
        small_steps = "200it" if quick else "600it"
        for name, dataset, batch in (("lenet-300-100", f"npz:{lenet_npz}", 60), ("mnist1d-mlp", "mnist1d", 100)):
            cfg = RunConfig(kind="sparse", data=DataConfig(dataset=dataset, batch_size=batch),
                            model=ModelConfig(model=name), train=TrainConfig(duration=small_steps),
                            sparse=SparseConfig(method="rigl", density=0.1))
            res = end_to_end(cfg, 2 if quick else 4, tmp)
            results[f"{name}_rigl_90"] = res
            print(f"{name} rigl 90%: end-to-end masked/sparse {res['wallclock_ratio']:.3f}x "
                  f"(sparse {1 / res['wallclock_ratio'] - 1:+.1%} time), sparse layers {res['sparse_layers']}", flush=True)
    return results


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv), indent=1, default=str))
