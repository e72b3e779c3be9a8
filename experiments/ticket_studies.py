"""Issue 5 studies on MNIST-1D (3 seeds): ticket ablations, sanity checks, transfer, instability.

    python experiments/ticket_studies.py --variant=PATH/mnist1d_b.npz [--seeds=0,1,2] [--store=runs/study-tickets]
    python experiments/ticket_studies.py --sanity-only [--seeds=0,1,2] [--store=...]   # section 2 alone

The variant comes from experiments/make_mnist1d_variant.py (generation seed 7, noise 0.4/0.05).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import final_acc, mean_std, run_all, seeds_arg, store_arg, write_table  # noqa: E402
from jackpot.config import (DataConfig, LotteryConfig, ModelConfig, PaiConfig, PruneConfig, RunConfig,  # noqa: E402
                            TrainConfig)
from jackpot.launch.local import run_parallel  # noqa: E402
from jackpot.procedures.branches import BranchSpec, branch_summary, run_branch_job  # noqa: E402
from jackpot.procedures.stability import run_stability  # noqa: E402

ADAM = TrainConfig(optimizer="adam", lr=2e-3, duration="10ep")
SGD = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, duration="10ep")
BASE = RunConfig(data=DataConfig(dataset="mnist1d"), model=ModelConfig(model="mnist1d-mlp"), train=ADAM)
IMP = replace(BASE, prune=PruneConfig(fraction=0.4), lottery=LotteryConfig(levels=6))   # 21.6% at 3, 4.7% at 6
SANITY_IMP = replace(BASE, prune=PruneConfig(fraction=0.6), lottery=LotteryConfig(levels=3, controls=""))  # 6.4%
CORRUPTIONS = ["", "random-labels", "random-pixels", "half"]
BRANCHES = [("random reinit", BranchSpec("reinit", seed=1)), ("rescaled reinit", BranchSpec("reinit", seed=1, rescale=True)),
            ("mask rearrange", BranchSpec("rearrange", seed=1)), ("weight shuffle", BranchSpec("shuffle", seed=1)),
            ("inverted (lowest magnitudes)", BranchSpec("invert"))]


def branches(run, level, store_cfg_changes=None):
    cfg = run.config() if store_cfg_changes is None else store_cfg_changes
    return [(str(run.path), replace(spec, level=level), cfg) for _, spec in BRANCHES]


def main() -> None:
    seeds, store = seeds_arg(), store_arg("runs/study-tickets")
    out = Path(store)
    if "--sanity-only" in sys.argv:
        return sanity_checks(seeds, store, out)
    variant = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--variant="))

    # 1. ablations of the ticket at 21.6% (level 3) and 4.7% (level 6)
    imp_runs = run_all([replace(IMP, seed=s) for s in seeds], store)
    jobs = [(str(r.path), replace(spec, level=lv), r.config()) for r in imp_runs for lv in (3, 6) for _, spec in BRANCHES]
    paths = run_parallel(run_branch_job, jobs, workers=2, threads=1)
    header = ["variant", "21.6% weights", "4.7% weights"]
    rows = [["IMP ticket"] + [mean_std([final_acc(r, lv)[1] for r in imp_runs]) for lv in (3, 6)]]
    for i, (label, _) in enumerate(BRANCHES):
        cells = []
        for j, lv in enumerate((3, 6)):
            accs = [branch_summary(paths[k * 10 + j * 5 + i])["final"]["test_acc"] for k in range(len(seeds))]
            cells.append(mean_std(accs))
        rows.append([label] + cells)
    print(write_table(out / "ablations.md", header, rows))

    sanity_checks(seeds, store, out)
    transfer_and_stability(seeds, store, out, variant, imp_runs)


def sanity_checks(seeds, store, out) -> None:
    """2. sanity checks on the mask-finding data, at 6.4% of the weights."""
    cfgs = []
    for c in CORRUPTIONS:
        data = replace(BASE.data, corrupt=c)
        for s in seeds:
            cfgs += [replace(SANITY_IMP, seed=s, data=data),
                     replace(BASE, kind="pai", seed=s, data=data, pai=PaiConfig(score="snip", density=0.064)),
                     replace(BASE, kind="pai", seed=s, data=data, pai=PaiConfig(score="random", budget="smart-ratio",
                                                                                 density=0.064))]
    runs = run_all(cfgs, store)
    rows = []
    for m, label in enumerate(["IMP (clean-data ticket)", "SNIP", "random, smart ratio"]):
        cells = []
        for ci, c in enumerate(CORRUPTIONS):
            picked = runs[ci * 3 * len(seeds):(ci + 1) * 3 * len(seeds)][m::3]
            arm = "clean" if c else "ticket"
            cells.append(mean_std([final_acc(r, 3, arm)[1] if m == 0 else final_acc(r)[1] for r in picked]))
        rows.append([label] + cells)
    print(write_table(out / "sanity.md", ["method", "clean (no corruption)", "random labels", "random pixels",
                                          "half data"], rows))



def transfer_and_stability(seeds, store, out, variant, imp_runs) -> None:
    # 3. transfer: MNIST-1D (embedded) -> variant B; SGD -> Adam; at 7.8% (level 5 of 40%/level)
    sgd_runs = run_all([replace(IMP, seed=s, train=SGD, lottery=LotteryConfig(levels=5, controls="")) for s in seeds], store)
    dense_b = run_all([replace(BASE, seed=s, data=DataConfig(dataset=f"npz:{variant}"), lottery=LotteryConfig(levels=0))
                       for s in seeds], store)
    to_b = lambda r: replace(r.config(), data=DataConfig(dataset=f"npz:{variant}"))
    to_adam = lambda r: replace(r.config(), train=ADAM)
    jobs = ([(str(r.path), BranchSpec("retrain", level=5), to_b(r)) for r in imp_runs]
            + [(str(r.path), BranchSpec("rearrange", level=5, seed=1), to_b(r)) for r in imp_runs]
            + [(str(r.path), BranchSpec("retrain", level=5), to_adam(r)) for r in sgd_runs]
            + [(str(r.path), BranchSpec("rearrange", level=5, seed=1), to_adam(r)) for r in sgd_runs])
    paths = run_parallel(run_branch_job, jobs, workers=2, threads=1)
    n = len(seeds)
    acc = lambda ps: mean_std([branch_summary(p)["final"]["test_acc"] for p in ps])
    rows = [["MNIST-1D -> variant B (Adam)", acc(paths[:n]), acc(paths[n:2 * n]),
             mean_std([final_acc(r, 0)[1] for r in dense_b]), mean_std([final_acc(r, 5)[1] for r in imp_runs])],
            ["SGD -> Adam (MNIST-1D)", acc(paths[2 * n:3 * n]), acc(paths[3 * n:]),
             mean_std([final_acc(r, 0)[1] for r in imp_runs]), mean_std([final_acc(r, 5)[1] for r in imp_runs])]]
    print(write_table(out / "transfer.md", ["transfer (7.8% weights)", "transferred ticket", "random mask, same counts",
                                            "dense on target", "Adam ticket on MNIST-1D, untransferred"], rows))

    # 4. instability vs rewind point (dense and the 7.8% ticket)
    rewinds = ["0it", "10it", "40it", "80it", "160it"]
    results = [run_stability(r, [0, 5], rewinds, alphas=11, progress=print) for r in imp_runs]
    rows = []
    for i, (lv, k) in enumerate([(lv, k) for lv in (0, 5) for k in rewinds]):
        rows.append([f"{lv} ({100 * results[0][i]['density']:.1f}%)", k,
                     mean_std([res[i]["barrier_error"] for res in results])])
    print(write_table(out / "stability.md", ["level (weights)", "rewind point", "error barrier (points)"], rows))


if __name__ == "__main__":
    main()
