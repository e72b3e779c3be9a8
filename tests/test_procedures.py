"""Prune-at-init and sparse-training runs end to end on a tiny npz dataset, inspect, and their
bad-input errors."""
import json

import pytest
import torch

from jackpot.cli import main
from jackpot.config import DataConfig, ModelConfig, PaiConfig, RunConfig, SparseConfig, TrainConfig
from jackpot.procedures import run
from jackpot.sparse import Masks, keep_count


def base(npz, kind, **groups):
    return RunConfig(kind=kind, data=DataConfig(dataset=f"npz:{npz}", batch_size=40),
                     model=ModelConfig(model="lenet-300-100"), train=TrainConfig(lr=2e-3, duration="4ep"), **groups)


def quiet(_):
    pass


@pytest.mark.parametrize("score, budget", [("snip", "global"), ("grasp", "global"), ("synflow", "global"),
                                           ("random", "smart-ratio"), ("magnitude", "erk")])
def test_pai_runs_keep_the_exact_budget(tiny_npz, tmp_path, score, budget):
    rounds = 5 if score == "synflow" else 1
    r = run(base(tiny_npz, "pai", pai=PaiConfig(score=score, budget=budget, density=0.2, rounds=rounds)),
            root=tmp_path, progress=quiet)
    masks = Masks.load(r.path / "mask.pt")
    assert masks.count() == keep_count(0.2, masks.size())
    report = json.loads((r.path / "budget.json").read_text())
    assert report["target"] == 0.2 and report["achieved"] == pytest.approx(0.2, abs=1e-4)
    final = torch.load(r.path / "train/final.pt", weights_only=True)
    assert (final["fc1.weight"][~masks["fc1.weight"]] == 0).all()
    assert json.loads((r.path / "summary.json").read_text())["final"]["test_acc"] > 0.3


def test_pai_is_deterministic_and_inversion_changes_the_mask(tiny_npz, tmp_path):
    cfg = base(tiny_npz, "pai", pai=PaiConfig(score="snip", density=0.3))
    a, b = run(cfg, root=tmp_path / "a", progress=quiet), run(cfg, root=tmp_path / "b", progress=quiet)
    assert all(torch.equal(x, y) for x, y in zip(Masks.load(a.path / "mask.pt").values(),
                                                 Masks.load(b.path / "mask.pt").values()))
    inv = run(base(tiny_npz, "pai", pai=PaiConfig(score="snip", density=0.3, invert=True)), root=tmp_path, progress=quiet)
    m, mi = Masks.load(a.path / "mask.pt"), Masks.load(inv.path / "mask.pt")
    assert mi.count() == m.count() and not torch.equal(m["fc1.weight"], mi["fc1.weight"])


@pytest.mark.parametrize("method", ["rigl", "set", "static", "snfs", "dsr"])
def test_sparse_training_keeps_counts_and_reports_flops(tiny_npz, tmp_path, method):
    cfg = base(tiny_npz, "sparse", sparse=SparseConfig(method=method, density=0.2, distribution="uniform", delta_t=4))
    r = run(cfg, root=tmp_path, progress=quiet)
    start, end = Masks.load(r.path / "mask_init.pt"), Masks.load(r.path / "train/mask.pt")
    if method in ("snfs", "dsr"):
        assert end.count() == start.count()
    else:
        assert end.layer_counts() == start.layer_counts()
    assert (method == "static") == all(torch.equal(start[n], end[n]) for n in start)
    s = json.loads((r.path / "summary.json").read_text())
    assert s["inference_flops_ratio"] == pytest.approx(end.count() / end.size(), rel=0.02)
    assert 0 < s["train_flops_ratio"] < 1


def test_gmp_small_dense_and_dense_baselines(tiny_npz, tmp_path):
    gmp = run(base(tiny_npz, "sparse", sparse=SparseConfig(method="gmp", density=0.1, delta_t=3, gmp_end=0.5)),
              root=tmp_path, progress=quiet)
    masks = Masks.load(gmp.path / "train/mask.pt")
    assert masks.layer_counts() == {n: keep_count(0.1, m.numel()) for n, m in masks.items()}
    small = run(base(tiny_npz, "sparse", sparse=SparseConfig(method="small-dense", density=0.1, distribution="uniform")),
                root=tmp_path, progress=quiet)
    s = json.loads((small.path / "summary.json").read_text())
    dense_params = 20 * 300 + 300 + 300 * 100 + 100 + 100 * 4 + 4
    target = dense_params - (20 * 300 + 300 * 100 + 100 * 4) + round(0.1 * (20 * 300 + 300 * 100 + 100 * 4))
    weights = torch.load(small.path / "train/final.pt", weights_only=True)
    assert sum(v.numel() for v in weights.values()) == pytest.approx(target, rel=0.05)
    assert s["width"] < 0.5 and s["train_flops_ratio"] < 0.2
    dense = json.loads((run(base(tiny_npz, "sparse", sparse=SparseConfig(method="dense")), root=tmp_path,
                            progress=quiet).path / "summary.json").read_text())
    assert dense["train_flops_ratio"] == pytest.approx(1.0) and dense["inference_flops_ratio"] == 1.0


def test_gmp_ending_at_the_last_step_reaches_the_final_density(tiny_npz, tmp_path):
    r = run(base(tiny_npz, "sparse", sparse=SparseConfig(method="gmp", density=0.1, delta_t=5, gmp_end=1.0)),
            root=tmp_path, progress=quiet)
    masks = Masks.load(r.path / "train/mask.pt")
    assert masks.layer_counts() == {n: keep_count(0.1, m.numel()) for n, m in masks.items()}


def test_extended_training_scales_steps_and_flops(tiny_npz, tmp_path):
    one = run(base(tiny_npz, "sparse", sparse=SparseConfig(method="rigl", density=0.2, delta_t=4)), root=tmp_path, progress=quiet)
    two = run(base(tiny_npz, "sparse", sparse=SparseConfig(method="rigl", density=0.2, delta_t=4, extend=2.0)),
              root=tmp_path, progress=quiet)
    s1, s2 = (json.loads((r.path / "summary.json").read_text()) for r in (one, two))
    assert s2["steps"] == 2 * s1["steps"] == 48
    assert s2["train_flops_ratio"] == pytest.approx(2 * s1["train_flops_ratio"], rel=0.02)


def test_sparse_run_killed_mid_training_resumes_bit_identical(tiny_npz, tmp_path, monkeypatch):
    """DST state (masks, SNFS statistics) travels in the checkpoint: an interrupted run ends identical."""
    import jackpot.train.loop as loop
    cfg = base(tiny_npz, "sparse", sparse=SparseConfig(method="snfs", density=0.2, delta_t=4))
    clean = run(cfg, root=tmp_path / "clean", progress=quiet)
    real, calls = loop.F.cross_entropy, [0]

    def dying(*a, **kw):
        calls[0] += 1
        if calls[0] == 15:  # in epoch 3, after the checkpoints of epochs 1 and 2
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(loop.F, "cross_entropy", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, root=tmp_path / "killed", progress=quiet)
    monkeypatch.setattr(loop.F, "cross_entropy", real)
    resumed = run(cfg, root=tmp_path / "killed", progress=quiet)
    a = torch.load(clean.path / "train/final.pt", weights_only=True)
    b = torch.load(resumed.path / "train/final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_inspect_json_and_flops(capsys):
    assert main(["inspect", "--model", "lenet-300-100", "--budget", "erk", "--density", "0.1", "--json", "--flops"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in info["layers"]] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert info["total"]["nnz"] == keep_count(0.1, 266200) and info["total"]["params"] == 266200
    assert info["total"]["flops"] == sum(2 * r["nnz"] for r in info["layers"])
    assert set(info["layers"][0]) >= {"name", "shape", "params", "density", "nnz", "flops"}


@pytest.mark.parametrize("args, message", [
    (["pai", "--score", "magic"], "unknown score"),
    (["pai", "--budget", "magic"], "unknown budget"),
    (["pai", "--density", "1.5"], "--density"),
    (["pai", "--min-layer-density", "0.1"], "not --budget global"),
    (["pai", "--budget", "custom", "--layer-densities", "fc9=0.5"], "fc9"),
    (["pai", "--budget", "uniform-first-dense", "--density", "0.05"], "cannot be met"),
    (["sparse", "--method", "magic"], "unknown sparse training method"),
    (["sparse", "--delta-t", "0"], "--delta-t"),
    (["sparse", "--alpha", "1.5"], "--alpha"),
    (["sparse", "--t-end", "1.5"], "--t-end"),
    (["inspect", "--model", "lenet-300-100", "--budget", "erk", "--density", "0"], "--density"),
])
def test_bad_input_for_pai_sparse_inspect(tiny_npz, store, capsys, args, message):
    extra = [] if args[0] == "inspect" else ["--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100",
                                               "--duration", "1ep", "--device", "cpu"]
    status = main(args + extra)
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("jackpot: error:") and err.count("\n") == 1
    assert message in err


def test_export_and_bench_commands(tiny_npz, store, capsys):
    from jackpot.export import load_exported
    from jackpot.models import create_model
    args = ["lottery", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "1ep", "--fraction", "0.9", "--levels", "1", "--controls", "", "--device", "cpu"]
    assert main(args) == 0
    run = next(p for p in store.iterdir() if p.name.startswith("lottery-"))
    out = store / "model.pt"
    assert main(["export", run.name, "-o", str(out)]) == 0
    exported = load_exported(out)
    model = create_model("lenet-300-100", (20,), 4)
    model.load_state_dict(torch.load(run / "level_01/ticket/final.pt", weights_only=True))
    x = torch.randn(5, 20)
    assert torch.allclose(exported(x), model.eval()(x), atol=1e-5)
    capsys.readouterr()
    assert main(["bench", run.name, "--rounds", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["density"] == pytest.approx(0.1, abs=0.01) and r["ideal"] == pytest.approx(1 / r["density"])
    assert set(r["forward"]) == {"dense", "masked", "sparse"}
    assert main(["export", run.name, "-o", str(out), "--level", "0", "--force"]) == 2
    assert "level 0 is dense" in capsys.readouterr().err
    assert main(["export", run.name, "-o", str(out), "--batch-size", "0", "--force"]) == 2
    assert "batch size" in capsys.readouterr().err
