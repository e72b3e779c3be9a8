"""Time per IMP level for LeNet-300-100 on a 4000-example npz dataset (784 features, 10 classes),
1 thread: each level trains the ticket and both controls for the given number of epochs."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import setup_threads
from jackpot.config import DataConfig, LotteryConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from jackpot.procedures.lottery import run_lottery


def write_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=5000)
    x = (centers[y] + 2.0 * rng.normal(size=(5000, 784))).astype(np.float32)
    np.savez(path, x_train=x[:4000], y_train=y[:4000], x_test=x[4000:], y_test=y[4000:])


def main(epochs: int = 5, levels: int = 2) -> dict:
    setup_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "lenet4000.npz"
        write_npz(npz)
        cfg = RunConfig(data=DataConfig(dataset=f"npz:{npz}", batch_size=60),
                        model=ModelConfig(model="lenet-300-100"),
                        train=TrainConfig(optimizer="adam", lr=1.2e-3, duration=f"{epochs}ep"),
                        prune=PruneConfig(fraction=0.2, output_fraction=0.1),
                        lottery=LotteryConfig(levels=levels))
        stamps = []
        t0 = time.perf_counter()

        def progress(line: str) -> None:
            stamps.append((time.perf_counter() - t0, line))
        run_lottery(cfg, root=Path(tmp) / "store", progress=progress)
    level_times = {}
    last = 0.0
    for t, line in stamps:
        if "level " in line:
            level = int(line.split("level ")[1].split("/")[0])
            level_times[level] = level_times.get(level, 0.0) + (t - last)
        last = t
    steps = epochs * 67  # ceil(4000 / 60)
    result = {"epochs_per_training": epochs, "steps_per_training": steps,
              "level_0_dense_s": level_times[0],
              "per_pruned_level_s": [level_times[l] for l in range(1, levels + 1)],
              "ms_per_step": 1e3 * level_times[1] / (3 * steps)}
    print(f"IMP level, LeNet-300-100, 4000 examples, {epochs} epochs ({steps} Adam steps) per training, 1 thread: "
          f"dense level 0 {result['level_0_dense_s']:.1f} s; each pruned level (ticket + 2 controls) "
          + ", ".join(f"{s:.1f} s" for s in result["per_pruned_level_s"])
          + f"; {result['ms_per_step']:.2f} ms per training step incl. evaluation", flush=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
