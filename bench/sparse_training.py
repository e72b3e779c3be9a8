"""Sparse execution inside training (`--execution sparse`, issue 12), in one process, 1 thread,
masked and sparse runs interleaved (alternating order per repetition), medians:

  1. `jackpot sparse --method rigl` (in process: jackpot.procedures.run) on a 4-layer MLP of width
     4096 (4096-4096-4096-4096-10, synthetic 4096-feature npz), uniform 95% and 99%, 200 steps
     (B=64, Adam at its default lr 1e-3, one mask update at delta_t = 100), 2 repetitions: end-to-end
     wall-clock ratio masked/sparse (data, init, per-layer choice, mask updates, evaluation and
     files included), the median step-time ratio, test accuracy of both, and the bytes of
     parameters + optimizer state (sparse: values; plus its index buffers, reported apart).
  2. The RigL update on the sparse structure (dense weights and one dense gradient materialised,
     the unchanged RigL code, the rebuild) as a share of training time at delta_t = 100:
     (t_update_step - t_step) / (100 t_step), sparse and masked; and the floor of any RigL update by
     its definition, the dense products g^T x of the update's batch alone (fresh outputs, as a
     backward makes them), as a share of the same 100 sparse steps.
  3. LeNet-300-100 (synthetic 784-feature npz) and the MNIST-1D MLP (embedded MNIST-1D), RigL 90%
     ERK: end-to-end masked/sparse (the per-layer choice keeps layers where sparse loses dense).
  4. Conv-4 with half the channels of every conv empty (the next conv's matching inputs too; 50% of
     the rest kept at random; the classifier 50% unstructured): a static-mask training stage of
     60 steps (B=64, SGD momentum) masked vs --execution sparse (channel-removed convs), and the
     exported model vs the baked dense model at inference, batch 64 and 1.

  5. --long: the 99% run again over 1000 steps at delta_t 100 (7 mask updates), one repetition;
     --long-steps N for another length (t_end is 75% of it: 2000 steps make 14 updates).

  Why lr 1e-3: at lr 1e-2 this synthetic task's training loss falls to ~1e-10 within 300 steps and
  the sparse run's backward meets subnormal floats, which slow the CSR products and sampled products
  on a CPU (the sparse step went from 15 to 39 ms over 500 steps; with torch.set_flush_denormal(True)
  it stayed at 14 ms; MKL's dense GEMM of the masked run did not slow). docs/performance.md.

  python bench/sparse_training.py [--quick] [--long [--long-steps N]]
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

from common import interleaved_ratio, setup_threads
from jackpot.config import DataConfig, ModelConfig, RunConfig, SparseConfig, TrainConfig
from jackpot.data.dataset import Dataset
from jackpot.export import export_model, summary
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
from jackpot.train.loop import Stage, train_stage

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
        if mode == "sparse":  # the least any RigL update does: one dense g^T x per layer
            floor = dense_gradient_seconds([masks[n].shape for n, e in sp.plan.items()
                                            if e.get("execution") == "sparse"], rounds)
            out[mode].update(dense_gradient_seconds=floor, dense_gradient_share=floor / (100 * t_step))
    return out


def dense_gradient_seconds(shapes: list, rounds: int) -> float:
    """Seconds of the dense weight-gradient products g^T x (B=BATCH) of sparse layers of `shapes` (a
    masked layer's backward makes its own every step), each
    into a fresh tensor as a backward makes it: the floor of a RigL update by its definition."""
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for out_f, in_f in shapes:
        g, x = torch.randn(BATCH, out_f, generator=gen), torch.randn(BATCH, in_f, generator=gen)
        torch.mm(g.t(), x)  # warm-up
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            torch.mm(g.t(), x)
            times.append(time.perf_counter() - t0)
        total += statistics.median(times)
    return total


def half_channel_conv4(seed: int = 0):
    """Conv-4 and masks: each conv keeps a random half of its output channels (and the inputs the
    previous conv kept), 50% of the remaining weights; the classifier 50% unstructured."""
    torch.manual_seed(seed)
    model = create_model("conv-4", (3, 32, 32), 10)
    g = torch.Generator().manual_seed(seed)
    masks, prev = Masks(), None
    for n in prunable_names(model):
        p = dict(model.named_parameters())[n]
        m = torch.rand(p.shape, generator=g) < 0.5
        if p.dim() == 4:
            kept = torch.zeros(p.shape[0], dtype=torch.bool)
            kept[torch.randperm(p.shape[0], generator=g)[: p.shape[0] // 2]] = True
            m &= kept.view(-1, 1, 1, 1)
            if prev is not None:
                m &= prev.view(1, -1, 1, 1)
            prev = kept
        masks[n] = m
    masks.apply_to(model)
    return model, masks


def conv_channels(reps: int, steps: int = 60) -> dict:
    """Acceptance 4: a channel-pruned Conv-4 trains (a whole stage) and exports faster than masked dense."""
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (steps * BATCH,), generator=g)
    x = torch.randn(10, 3, 32, 32, generator=g)[y] + torch.randn(len(y), 3, 32, 32, generator=g)
    data = Dataset("synthetic-cifar", x, y, x[:256], y[:256], 10)
    times, records = {"masked": [], "sparse": []}, {}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(reps):
            for mode in (("masked", "sparse") if rep % 2 == 0 else ("sparse", "masked")):
                model, masks = half_channel_conv4()
                train = TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, execution=mode)
                t0 = time.perf_counter()
                records[mode] = train_stage(Stage(dir=Path(d) / f"{mode}{rep}", model=model, dataset=data, train=train,
                                                  batch_size=BATCH, order_seed=1, start=0, end=steps, masks=masks,
                                                  callbacks=[make_method("static", UpdateSchedule())]))
                times[mode].append(time.perf_counter() - t0)
    ratios = [m / s for m, s in zip(times["masked"], times["sparse"])]
    plan = records["sparse"]["execution"]
    out = {"stage_seconds": {k: statistics.median(v) for k, v in times.items()}, "stage_ratio": statistics.median(ratios),
           "step_ratio": records["masked"]["cost"]["step_seconds_median"] / records["sparse"]["cost"]["step_seconds_median"],
           "channels": plan["channels"], "sparse": plan["sparse"], "masked": plan["masked"]}
    model, masks = half_channel_conv4()
    model.eval()
    for batch in (64, 1):
        exported = export_model(model, masks, batch, input_shape=(3, 32, 32))
        xb = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            res = interleaved_ratio({"dense": lambda: model(xb), "exported": lambda: exported(xb)}, "exported",
                                    rounds=7, reps=3 if batch == 64 else 20)
        out[f"export_b{batch}"] = {"speedup": res["dense"]["ratio"], "iqr": res["dense"]["iqr"],
                                   "formats": {r["name"]: r["format"] for r in summary(exported)}}
    return out


LONG = 1000  # --long: one 1000-step repetition at 99% (about 10 min)


def main(quick: bool = False, long: bool = False, long_steps: int = LONG) -> dict:
    setup_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        steps = 60 if quick else 200  # two epochs; one mask update (step 100 of t_end 150) at delta_t 100
        npz = synthetic_npz(tmp / "mlp4096.npz", WIDTH, steps // 2 * BATCH, 500)
        for density in (0.05, 0.01):
            cfg = RunConfig(kind="sparse", data=DataConfig(dataset=f"npz:{npz}", batch_size=BATCH),
                            model=ModelConfig(model="bench-mlp-4096"),
                            train=TrainConfig(optimizer="adam", lr=1e-3, duration=f"{steps}it"),
                            sparse=SparseConfig(method="rigl", density=density, distribution="uniform",
                                                delta_t=steps // 2))
            res = end_to_end(cfg, 1 if quick else 2, tmp)
            results[f"mlp4096_rigl_{round(100 * (1 - density))}"] = res
            if long and density == 0.01:  # the one-off work (~10 s, the same in both modes) amortised
                cfg = replace(cfg, train=replace(cfg.train, duration=f"{long_steps}it"),
                              data=replace(cfg.data, dataset=f"npz:{synthetic_npz(tmp / 'long.npz', WIDTH, 64 * 100, 500)}"),
                              sparse=replace(cfg.sparse, delta_t=100))
                long_res = end_to_end(cfg, 1, tmp)
                results["mlp4096_rigl_99_long"] = long_res
                print(f"4096-MLP rigl 99%, {long_steps} steps, delta_t 100: end-to-end masked/sparse "
                      f"{long_res['wallclock_ratio']:.2f}x (step {long_res.get('step_ratio', float('nan')):.2f}x), "
                      f"seconds {long_res['seconds']}, test acc {long_res['test_acc']}", flush=True)
            print(f"4096-MLP rigl {100 * (1 - density):.0f}%: end-to-end masked/sparse {res['wallclock_ratio']:.2f}x "
                  f"(step {res.get('step_ratio', float('nan')):.2f}x), test acc masked {res['test_acc']['masked']:.3f} "
                  f"sparse {res['test_acc']['sparse']:.3f}, bytes ratio {res.get('bytes_ratio', float('nan')):.3f} "
                  f"({res.get('bytes_ratio_with_index', float('nan')):.3f} with index buffers), "
                  f"sparse layers {res['sparse_layers']}", flush=True)
        for density in (0.05, 0.01):
            res = update_share(density, 2 if quick else 3)
            results[f"mlp4096_update_share_{round(100 * (1 - density))}"] = res
            print(f"4096-MLP RigL update share at delta_t=100, {100 * (1 - density):.0f}%: sparse "
                  f"{100 * res['sparse']['share_at_delta_t_100']:.2f}% (step {res['sparse']['step_seconds']:.3f}s; "
                  f"its dense products alone {100 * res['sparse']['dense_gradient_share']:.2f}%), "
                  f"masked {100 * res['masked']['share_at_delta_t_100']:.2f}% "
                  f"(step {res['masked']['step_seconds']:.3f}s)", flush=True)
        res = conv_channels(1 if quick else 3, 30 if quick else 60)
        results["conv4_half_channels"] = res
        print(f"Conv-4 half channels: stage masked/sparse {res['stage_ratio']:.2f}x (step {res['step_ratio']:.2f}x), "
              f"channel-removed {res['channels']}; export B=64 {res['export_b64']['speedup']:.2f}x, "
              f"B=1 {res['export_b1']['speedup']:.2f}x vs baked dense", flush=True)
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
    steps = int(sys.argv[sys.argv.index("--long-steps") + 1]) if "--long-steps" in sys.argv else LONG
    print(json.dumps(main("--quick" in sys.argv, "--long" in sys.argv, steps), indent=1, default=str))
