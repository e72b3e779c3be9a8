"""Issue 3 study: lottery ticket vs one-shot magnitude vs pruning at initialisation vs random and
hybrid tickets on MNIST-1D, 3 seeds, at about 22%, 8% and 3% of the weights.

    python experiments/pai_comparison.py [--seeds=0,1,2] [--store=runs/study-pai]
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import final_acc, mean_std, run_all, seeds_arg, store_arg, write_table  # noqa: E402
from jackpot.config import DataConfig, LotteryConfig, ModelConfig, PaiConfig, PruneConfig, RunConfig, TrainConfig  # noqa: E402

FRACTION = 0.4                      # IMP: 40% of the remaining weights per level
LEVELS = {3: 0.6 ** 3, 5: 0.6 ** 5, 7: 0.6 ** 7}   # 21.6%, 7.8%, 2.8% of the weights
BASE = RunConfig(data=DataConfig(dataset="mnist1d"), model=ModelConfig(model="mnist1d-mlp"),
                 train=TrainConfig(optimizer="adam", lr=2e-3, duration="10ep"))
PAI = {  # label -> (score, budget)
    "SNIP": ("snip", "global"), "GraSP": ("grasp", "global"), "SynFlow (100 rounds)": ("synflow", "global"),
    "random, uniform": ("random", "uniform"), "random, ERK": ("random", "erk"),
    "random, smart ratio": ("random", "smart-ratio"),
}


def configs(seed: int) -> dict:
    out = {"IMP ticket": replace(BASE, seed=seed, prune=PruneConfig(fraction=FRACTION),
                                 lottery=LotteryConfig(levels=max(LEVELS), controls=""))}
    for level, d in LEVELS.items():
        one_shot = PruneConfig(fraction=1 - d)
        out[("one-shot magnitude", d)] = replace(BASE, seed=seed, prune=one_shot,
                                                 lottery=LotteryConfig(levels=1, controls="", retrain="lr-rewind"))
        out[("hybrid ticket", d)] = replace(BASE, seed=seed, prune=one_shot, lottery=LotteryConfig(
            levels=1, controls="", retrain="lr-rewind", budget="smart-ratio"))
        for label, (score, budget) in PAI.items():
            rounds = 100 if score == "synflow" else 1
            out[(label, d)] = replace(BASE, kind="pai", seed=seed,
                                      pai=PaiConfig(score=score, budget=budget, density=d, rounds=rounds))
    return out


def main() -> None:
    seeds, store = seeds_arg(), store_arg("runs/study-pai")
    per_seed = [configs(s) for s in seeds]
    keys = list(per_seed[0])
    runs = run_all([c[k] for c in per_seed for k in keys], store)
    results = {}
    for i, _ in enumerate(seeds):
        for j, key in enumerate(keys):
            run = runs[i * len(keys) + j]
            if key == "IMP ticket":
                for level, d in LEVELS.items():
                    results.setdefault(("IMP ticket", d), []).append(final_acc(run, level))
            else:
                level = 1 if per_seed[0][key].kind == "lottery" else None
                results.setdefault(key, []).append(final_acc(run, level))
    methods = ["IMP ticket", "one-shot magnitude", *PAI, "hybrid ticket"]
    header = ["method"] + [f"{100 * d:.1f}% weights" for d in LEVELS.values()]
    rows = [[m] + [mean_std([a for _, a in results[(m, d)]]) for d in LEVELS.values()] for m in methods]
    print(write_table(Path(store) / "table.md", header, rows))


if __name__ == "__main__":
    main()
