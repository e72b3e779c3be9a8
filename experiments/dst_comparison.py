"""Issue 4 study: sparse training from scratch vs baselines, 3 seeds, 90% and 95% sparsity, on
MNIST-1D (its MLP) and on 5,000 real MNIST digits (LeNet-300-100, npz file from
experiments/make_mnist5k_npz.py). 20 epochs, Adam; DST updates every 25 steps until 75% of training.

    python experiments/dst_comparison.py --npz=PATH/mnist5k.npz [--seeds=0,1,2] [--store=runs/study-dst]
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import mean_std, run_all, seeds_arg, store_arg, write_table  # noqa: E402
from jackpot.analysis.summary import run_summary  # noqa: E402
from jackpot.config import DataConfig, ModelConfig, RunConfig, SparseConfig, TrainConfig  # noqa: E402

METHODS = ["rigl", "set", "snfs", "dsr", "static", "gmp", "small-dense"]
DENSITIES = [0.1, 0.05]


def setups(npz: str) -> dict[str, RunConfig]:
    train = TrainConfig(optimizer="adam", lr=2e-3, duration="20ep")
    return {"MNIST-1D, mnist1d-mlp": RunConfig(kind="sparse", data=DataConfig(dataset="mnist1d"),
                                               model=ModelConfig(model="mnist1d-mlp"), train=train),
            "MNIST 5k, lenet-300-100": RunConfig(kind="sparse", data=DataConfig(dataset=f"npz:{npz}", batch_size=60),
                                                 model=ModelConfig(model="lenet-300-100"), train=train)}


def main() -> None:
    npz = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--npz="))
    seeds, store = seeds_arg(), store_arg("runs/study-dst")
    jobs = []
    for setup, base in setups(npz).items():
        for seed in seeds:
            jobs.append((setup, "dense", 1.0, replace(base, seed=seed, sparse=SparseConfig(method="dense"))))
            for d in DENSITIES:
                for m in METHODS:
                    jobs.append((setup, m, d, replace(base, seed=seed, sparse=SparseConfig(
                        method=m, density=d, distribution="erk", delta_t=25))))
    runs = run_all([j[3] for j in jobs], store)
    results = {}
    for (setup, m, d, _), r in zip(jobs, runs):
        results.setdefault((setup, m, d), []).append(run_summary(r))
    for setup in setups(npz):
        header = ["method", "sparsity", "test accuracy (%)", "train FLOPs (x dense)", "inference FLOPs (x dense)"]
        rows = []
        for m, d in [("dense", 1.0)] + [(m, d) for d in DENSITIES for m in METHODS]:
            s = results[(setup, m, d)]
            rows.append([m, f"{100 * (1 - d):.0f}%", mean_std([x["final"]["test_acc"] for x in s]),
                         f"{statistics.fmean(x['train_flops_ratio'] for x in s):.3f}",
                         f"{statistics.fmean(x['inference_flops_ratio'] for x in s):.3f}"])
        print(f"\n{setup}\n" + write_table(Path(store) / f"{setup.split(',')[0].replace(' ', '_')}.md", header, rows))


if __name__ == "__main__":
    main()
