"""Branches, corruptions, transfer, stability and mask similarity (issue 5)."""
import dataclasses

import numpy as np
import pytest
import torch

from jackpot.cli import main
from jackpot.config import DataConfig, LotteryConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from jackpot.data.corrupt import corrupt, permute_features, random_labels
from jackpot.data.dataset import Dataset
from jackpot.errors import JackpotError
from jackpot.procedures.branches import BranchSpec, Source, apply_branch, run_branch, ticket_source, transfer
from jackpot.procedures.context import RunContext
from jackpot.procedures.lottery import run_lottery
from jackpot.procedures.stability import barrier
from jackpot.sparse import Masks


def quiet(_):
    pass


@pytest.fixture
def ticket_run(tiny_npz, tmp_path):
    cfg = RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40), model=ModelConfig(model="lenet-300-100"),
                    train=TrainConfig(duration="2ep"), prune=PruneConfig(fraction=0.5), lottery=LotteryConfig(levels=2))
    return run_lottery(cfg, root=tmp_path / "store", progress=quiet)


def source_and_branch(run, kind, **kw):
    ctx = RunContext.attach(run, progress=quiet)
    src = ticket_source(ctx, 2)
    return ctx, src, apply_branch(ctx, BranchSpec(kind, level=2, **kw), src)


def test_reinit_keeps_mask_changes_weights_and_rescales(ticket_run):
    ctx, src, plain = source_and_branch(ticket_run, "reinit")
    _, _, scaled = source_and_branch(ticket_run, "reinit", rescale=True)
    assert all(torch.equal(plain.masks[n], src.masks[n]) for n in src.masks)
    assert not torch.equal(plain.weights["fc1.weight"], src.weights["fc1.weight"])
    for n, m in src.masks.items():  # 1/sqrt(density) of each layer
        assert torch.allclose(scaled.weights[n], plain.weights[n] / m.float().mean().sqrt())


def test_rearrange_keeps_counts_and_moves_positions(ticket_run):
    _, src, br = source_and_branch(ticket_run, "rearrange")
    assert br.masks.layer_counts() == src.masks.layer_counts()
    assert not torch.equal(br.masks["fc1.weight"], src.masks["fc1.weight"])
    assert torch.equal(br.weights["fc1.weight"], src.weights["fc1.weight"])  # rewind weights, new positions


def test_shuffle_keeps_mask_and_the_set_of_values(ticket_run):
    _, src, br = source_and_branch(ticket_run, "shuffle")
    for n, m in src.masks.items():
        assert torch.equal(br.masks[n], m)
        assert torch.equal(br.weights[n][m].sort().values, src.weights[n][m].sort().values)
        assert not torch.equal(br.weights[n][m], src.weights[n][m])
        assert torch.equal(br.weights[n][~m], src.weights[n][~m])


def test_invert_keeps_counts_and_keeps_the_smallest_trained_weights(ticket_run):
    ctx, src, br = source_and_branch(ticket_run, "invert")
    assert br.masks.layer_counts() == src.masks.layer_counts()
    level1 = Masks.load(ticket_run.path / "level_01/mask.pt")
    assert br.masks.is_subset_of(level1)
    trained = torch.load(ticket_run.path / "level_01/ticket/final.pt", weights_only=True)["fc2.weight"].abs()
    kept_inv, kept = trained[br.masks["fc2.weight"]], trained[src.masks["fc2.weight"]]
    assert kept_inv.max() <= kept.min()


def test_branch_runs_are_stored_under_the_parent_and_retrain_changes_only_training(ticket_run):
    cfg = ticket_run.config()
    path = run_branch(ticket_run, BranchSpec("shuffle", level=2), cfg, progress=quiet)
    assert path.parent == ticket_run.path / "branches" and (path / "train/done.json").exists()
    adam = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, optimizer="sgd", lr=0.05))
    other = run_branch(ticket_run, BranchSpec("retrain", level=2), adam, progress=quiet)
    assert other != path
    masks = Masks.load(other / "train/mask.pt")
    assert masks.layer_counts() == Masks.load(ticket_run.path / "level_02/mask.pt").layer_counts()


def test_transfer_maps_by_name_recreates_the_output_layer_and_refuses_other_mismatches():
    torch.manual_seed(0)
    from jackpot.models import create_model
    source_model = create_model("lenet-300-100", (20,), 4)
    masks = Masks({n: torch.rand(p.shape) < 0.3 for n, p in source_model.named_parameters() if n.endswith("weight")})
    src = Source(masks, source_model.state_dict(), 0, 10, None)
    moved, mapping = transfer(src, create_model("lenet-300-100", (20,), 7), [])
    assert "fc3.weight" in mapping["recreated"] and bool(moved.masks["fc3.weight"].all())  # dense, still masked
    assert torch.equal(moved.weights["fc1.weight"], src.weights["fc1.weight"])
    assert torch.equal(moved.masks["fc2.weight"], masks["fc2.weight"])
    with pytest.raises(JackpotError, match="cannot transfer fc1.weight"):
        transfer(src, create_model("lenet-300-100", (30,), 4), [])
    moved, mapping = transfer(src, create_model("lenet-300-100", (30,), 4), ["fc1"])
    assert "fc1.weight" in mapping["recreated"] and bool(moved.masks["fc1.weight"].all())


def tiny_dataset(n=200, classes=5):
    g = torch.Generator().manual_seed(0)
    return Dataset("t", torch.randn(n, 3, 4, generator=g), torch.randint(0, classes, (n,), generator=g),
                   torch.randn(10, 3, 4), torch.zeros(10, dtype=torch.long), classes)


def test_random_labels_redraw_an_exact_fraction_seeded():
    ds = tiny_dataset()
    y = random_labels(ds.y_train, 5, 0.3, torch.Generator().manual_seed(1))
    # 60 of 200 labels are redrawn over all 5 classes: about 4/5 of those change
    assert 30 <= int((y != ds.y_train).sum()) <= 60
    assert torch.equal(y, random_labels(ds.y_train, 5, 0.3, torch.Generator().manual_seed(1)))
    assert not torch.equal(y, random_labels(ds.y_train, 5, 0.3, torch.Generator().manual_seed(2)))


def test_random_pixels_permute_each_example_and_randomise_labels():
    ds = tiny_dataset()
    out = corrupt(ds, "random-pixels", 1.0, torch.Generator().manual_seed(0))
    a, b = ds.x_train.reshape(200, -1), out.x_train.reshape(200, -1)
    assert torch.equal(a.sort(dim=1).values, b.sort(dim=1).values)  # same values per example
    assert (a != b).any(dim=1).all()  # every example permuted
    assert 120 <= int((out.y_train != ds.y_train).sum()) < 200  # uniform over all classes: ~4/5 change
    assert torch.equal(out.x_test, ds.x_test)  # test data untouched
    p1 = permute_features(ds.x_train, torch.Generator().manual_seed(3))
    assert torch.equal(p1, permute_features(ds.x_train, torch.Generator().manual_seed(3)))


def test_half_dataset_is_an_exact_seeded_subset():
    ds = tiny_dataset()
    half = corrupt(ds, "half", 0.5, torch.Generator().manual_seed(0))
    assert half.num_train == 100
    rows = {tuple(r.tolist()) for r in ds.x_train.reshape(200, -1)}
    assert all(tuple(r.tolist()) in rows for r in half.x_train.reshape(100, -1))


def test_corrupted_lottery_trains_the_ticket_on_clean_data(tiny_npz, tmp_path):
    cfg = RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40, corrupt="random-labels"),
                    model=ModelConfig(model="lenet-300-100"), train=TrainConfig(duration="2ep"),
                    lottery=LotteryConfig(levels=1, controls=""))
    run = run_lottery(cfg, root=tmp_path, progress=quiet)
    import json
    clean = json.loads((run.path / "level_01/clean/done.json").read_text())["final"]["test_acc"]
    corrupted = json.loads((run.path / "level_01/ticket/done.json").read_text())["final"]["test_acc"]
    assert clean > corrupted + 0.2  # labels are fully random for the mask-finding ticket


def test_barrier_of_a_model_with_itself_is_zero():
    from jackpot.models import create_model
    torch.manual_seed(0)
    model = create_model("lenet-300-100", (20,), 4)
    w = model.state_dict()
    r = barrier(model, w, w, torch.randn(50, 20), torch.randint(0, 4, (50,)), 5, "cpu")
    assert r["barrier_error"] == 0.0 and r["barrier_loss"] == pytest.approx(0.0, abs=1e-6)
    assert len(r["errors"]) == 5


def test_stability_command_and_compare(ticket_run, capsys):
    store = str(ticket_run.path.parent)
    assert main(["stability", ticket_run.hash, "--store", store, "--levels", "0,2", "--rewinds", "0it,3it",
                 "--alphas", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("| 2 | 25.0% |") == 2 and out.count("| 0 | 100.0% |") == 2
    assert main(["compare", f"{ticket_run.hash}:1", f"{ticket_run.hash}:2", "--store", store, "--json"]) == 0
    import json
    rows = json.loads(capsys.readouterr().out)
    assert all(0 < r["jaccard"] <= 1 for r in rows)
    a, b = Masks.load(ticket_run.path / "level_01/mask.pt"), Masks.load(ticket_run.path / "level_02/mask.pt")
    assert rows[0]["jaccard"] == pytest.approx(int((a["fc1.weight"] & b["fc1.weight"]).sum()) /
                                               int((a["fc1.weight"] | b["fc1.weight"]).sum()))


@pytest.mark.parametrize("argv, message", [
    (["branch", "deadbeef", "reinit"], "no run"),
    (["branch", "{run}", "reinit", "--level", "5"], "no ticket at level 5"),
    (["branch", "{run}", "reinit", "--level", "0"], "--level must be >= 1"),
    (["branch", "{run}", "retrain", "--dataset", "npz:{wide}"], "cannot transfer fc1.weight"),
    (["stability", "{run}", "--levels", "7"], "no level 7"),
    (["compare", "{run}:9", "{run}:1"], "no mask"),
])
def test_bad_branch_input(ticket_run, tmp_path, capsys, argv, message):
    wide = tmp_path / "wide.npz"
    np.savez(wide, x_train=np.random.rand(50, 30).astype(np.float32), y_train=np.arange(50) % 4,
             x_test=np.random.rand(10, 30).astype(np.float32), y_test=np.arange(10) % 4)
    argv = [a.format(run=ticket_run.hash, wide=wide) for a in argv] + ["--store", str(ticket_run.path.parent)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jackpot: error:") and err.count("\n") == 1 and message in err


def test_retrain_branch_switches_weight_rewinding_to_lr_rewinding(ticket_run):
    ctx = RunContext.attach(ticket_run, progress=quiet)
    rewound = ticket_source(ctx, 2)
    lr_rewound = ticket_source(ctx, 2, retrain="lr-rewind")
    init = torch.load(ticket_run.path / "init.pt", weights_only=True)
    trained = torch.load(ticket_run.path / "level_01/ticket/final.pt", weights_only=True)
    assert torch.equal(rewound.weights["fc1.weight"], init["fc1.weight"])
    assert torch.equal(lr_rewound.weights["fc1.weight"], trained["fc1.weight"])
    path = run_branch(ticket_run, BranchSpec("retrain", level=2, retrain="finetune"), ticket_run.config(), progress=quiet)
    import json
    lrs = {json.loads(l)["lr"] for l in (path / "train/metrics.jsonl").read_text().splitlines()}
    assert len(lrs) == 1


def test_inverted_pai_branch_keeps_each_layers_count(tiny_npz, tmp_path):
    from jackpot.config import PaiConfig
    from jackpot.procedures import run
    cfg = RunConfig(kind="pai", data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40),
                    model=ModelConfig(model="lenet-300-100"), train=TrainConfig(duration="1ep"),
                    pai=PaiConfig(score="snip", density=0.1))
    parent = run(cfg, root=tmp_path, progress=quiet)
    ctx = RunContext.attach(parent, progress=quiet)
    src = ticket_source(ctx, 1)
    inv = apply_branch(ctx, BranchSpec("invert"), src)
    assert inv.masks.layer_counts() == src.masks.layer_counts()
    assert all(int((inv.masks[n] & src.masks[n]).sum()) < 0.5 * int(src.masks[n].sum()) for n in src.masks)
    # a trained branch records its data's shape, so it exports like a run (it was "damaged dataset record")
    path = run_branch(parent, BranchSpec("invert"), cfg, progress=quiet)
    assert (path / "dataset.json").exists()
    assert main(["export", str(path), "--batch-size", "4", "--out", str(tmp_path / "branch.pt")]) == 0
    assert (tmp_path / "branch.pt").exists()
    for extra in (["--level", "3"], ["--arm", "random"]):  # a pai run has no levels or arms: refused, not ignored
        assert main(["export", str(parent.path), "--out", str(tmp_path / "x.pt")] + extra) == 2
    assert not (tmp_path / "x.pt").exists()


def test_finetune_branch_with_new_training_still_finetunes(ticket_run):
    import json
    cfg = ticket_run.config()
    cosine = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="cosine", lr=1e-3))
    path = run_branch(ticket_run, BranchSpec("retrain", level=2, retrain="finetune"), cosine, progress=quiet)
    lrs = {json.loads(l)["lr"] for l in (path / "train/metrics.jsonl").read_text().splitlines()}
    import math
    # the final LR of the 12-step cosine schedule (2 epochs of 6 steps), throughout
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 11 / 12)))


def test_half_data_keeps_the_clean_schedule(tiny_npz, tmp_path):
    import json
    cfg = RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40, corrupt="half"),
                    model=ModelConfig(model="lenet-300-100"),
                    train=TrainConfig(duration="4ep", warmup="1ep", schedule="step", milestones="2ep"),
                    lottery=LotteryConfig(levels=1, controls=""))
    run = run_lottery(cfg, root=tmp_path, progress=quiet)
    lr = lambda arm: {json.loads(l)["step"]: json.loads(l)["lr"]
                      for l in (run.path / f"level_01/{arm}/metrics.jsonl").read_text().splitlines()}
    ticket, clean = lr("ticket"), lr("clean")  # half the examples: epochs of 3 steps vs 6
    assert max(ticket) == max(clean) == 24
    assert ticket[12] == clean[12] == 2e-3 and ticket[24] == clean[24] == pytest.approx(2e-4)


def test_branch_options_may_come_before_the_run(ticket_run, capsys):
    store = str(ticket_run.path.parent)
    assert main(["branch", "--store", store, "--threads", "1", "--level", "2", ticket_run.hash, "shuffle",
                 "--device", "cpu"]) == 0
    assert "branch shuffle" in capsys.readouterr().out
    assert main(["branch", "--store", store, ticket_run.hash, "reinit", "--level", "9"]) == 2
    assert not list((ticket_run.path / "branches").glob("reinit-L9-*"))  # refused before any directory
