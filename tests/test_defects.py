"""Issue 11, wrong or misleading results: controls under fine-tuning (1), transfer density (2),
settings a run does not read (3), the thread count (4), bad class counts and empty splits (14).
Item 5 (the DDP training loss) is in test_ddp.py."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from jackpot.cli import main
from jackpot.config import DataConfig, LotteryConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from jackpot.procedures.lottery import run_lottery
from jackpot.sparse import Masks
from conftest import write_tiny_npz


def quiet(_):
    pass


def lottery_cfg(npz, retrain, levels=1, controls="reinit", rewind="0it", duration="3ep"):
    return RunConfig(data=DataConfig(dataset=f"npz:{npz}", batch_size=40), model=ModelConfig(model="lenet-300-100"),
                     train=TrainConfig(lr=2e-3, duration=duration, schedule="cosine"), prune=PruneConfig(fraction=0.5),
                     lottery=LotteryConfig(levels=levels, controls=controls, retrain=retrain, rewind=rewind))


def metrics(run, rel):
    return [json.loads(line) for line in (run.path / rel / "metrics.jsonl").read_text().splitlines()]


def final(run, rel):
    return torch.load(run.path / rel / "final.pt", weights_only=True)


def cli(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


# --- 1: controls train as the network they stand for --------------------------------------------

def test_reinit_control_trains_the_full_schedule_from_step_0_in_every_retraining_mode(tiny_npz, tmp_path):
    """Fresh weights are fresh weights: with --rewind 0it the reinit arm is the same training
    (0 -> T, full cosine schedule) whether the ticket rewinds, replays the LR or fine-tunes; it
    used to take fine-tuning's final LR (about 0) throughout and stay at its initial accuracy."""
    runs = {mode: run_lottery(lottery_cfg(tiny_npz, mode), root=tmp_path, progress=quiet)
            for mode in ("rewind", "lr-rewind", "finetune")}
    reference = final(runs["rewind"], "level_01/reinit")
    for mode in ("lr-rewind", "finetune"):
        weights = final(runs[mode], "level_01/reinit")
        assert all(torch.equal(weights[k], reference[k]) for k in reference), mode
    rows = metrics(runs["finetune"], "level_01/reinit")
    assert rows[0]["step"] == 0 and rows[-1]["step"] == 18
    assert rows[1]["lr"] > 100 * rows[-1]["lr"]  # the cosine schedule, not its last value
    ticket = metrics(runs["finetune"], "level_01/ticket")
    assert {r["lr"] for r in ticket[1:]} == {ticket[-1]["lr"]}  # the ticket itself still fine-tunes
    acc = rows[-1]["test_acc"]
    assert acc > rows[0]["test_acc"] + 0.3 and acc > 0.8  # it learns (4 classes: chance 0.25)


def test_reinit_control_starts_at_step_0_when_lr_rewinding_to_k(tiny_npz, tmp_path):
    run = run_lottery(lottery_cfg(tiny_npz, "lr-rewind", rewind="1ep"), root=tmp_path, progress=quiet)
    assert metrics(run, "level_01/ticket")[0]["step"] == 6  # the ticket replays from k = 1 epoch
    assert metrics(run, "level_01/reinit")[0]["step"] == 0


def test_reinit_branch_of_a_fine_tuned_ticket_trains_the_full_schedule(tiny_npz, tmp_path):
    from jackpot.procedures.branches import BranchSpec, run_branch
    run = run_lottery(lottery_cfg(tiny_npz, "finetune", controls="", rewind="1ep"), root=tmp_path, progress=quiet)
    reinit = run_branch(run, BranchSpec("reinit"), run.config(), progress=quiet)
    rows = [json.loads(line) for line in (reinit / "train/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[1]["lr"] > 100 * rows[-1]["lr"]
    sgd = replace(run.config(), train=replace(run.config().train, optimizer="sgd", lr=0.05))
    retrain = run_branch(run, BranchSpec("retrain"), sgd, progress=quiet)  # the ticket: still fine-tuned
    rows = [json.loads(line) for line in (retrain / "train/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 6 and len({r["lr"] for r in rows[1:]}) == 1 and rows[-1]["lr"] < 0.05 * 0.01


def test_random_mask_control_prunes_the_same_trained_network_when_weights_are_kept(tiny_npz, tmp_path):
    """Under finetune the random arm starts from level L-1's trained weights: its positions are
    drawn among the weights that network still has (same counts as the ticket), so none of its
    kept weights starts at a pruned zero; level 1 (a dense network) keeps the draw it had."""
    ft = run_lottery(lottery_cfg(tiny_npz, "finetune", levels=2, controls="random"), root=tmp_path, progress=quiet)
    rw = run_lottery(lottery_cfg(tiny_npz, "rewind", levels=1, controls="random"), root=tmp_path, progress=quiet)
    level1, ticket2 = Masks.load(ft.path / "level_01/mask.pt"), Masks.load(ft.path / "level_02/mask.pt")
    random2 = Masks.load(ft.path / "level_02/random/mask.pt")
    assert random2.layer_counts() == ticket2.layer_counts()
    assert random2.is_subset_of(level1)
    assert not all(torch.equal(random2[n], ticket2[n]) for n in ticket2)
    first, reference = Masks.load(ft.path / "level_01/random/mask.pt"), Masks.load(rw.path / "level_01/random/mask.pt")
    assert all(torch.equal(first[n], reference[n]) for n in reference)


def test_random_like_within_draws_only_allowed_positions_and_a_full_set_changes_nothing():
    ticket = Masks({"w": torch.zeros(10, 10, dtype=torch.bool)})
    ticket["w"].view(-1)[:30] = True
    within = Masks({"w": torch.zeros(10, 10, dtype=torch.bool)})
    within["w"].view(-1)[50:] = True
    drawn = ticket.random_like(torch.Generator().manual_seed(0), within=within)
    assert int(drawn["w"].sum()) == 30 and drawn.is_subset_of(within)
    full = Masks({"w": torch.ones(10, 10, dtype=torch.bool)})
    assert torch.equal(ticket.random_like(torch.Generator().manual_seed(1), within=full)["w"],
                       ticket.random_like(torch.Generator().manual_seed(1))["w"])


# --- 2: a transfer's density counts the re-created layers --------------------------------------

def test_transfer_density_is_over_the_target_prunable_set_with_recreated_layers_dense(tmp_path, store, capsys):
    """lenet-300-100 on 20 features: fc1 6000, fc2 30000 weights; the 4-class ticket keeps half of
    fc2 (15000). On a 3-class dataset with --exclude fc1, fc1 (6000) and fc3 (100 x 3 = 300) are
    re-created dense: (6000 + 15000 + 300) / (6000 + 30000 + 300) = 58.7%, not the 50.0% of fc2."""
    parent = write_tiny_npz(tmp_path / "four.npz")
    other = tmp_path / "three.npz"
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=120)
    x = (rng.normal(size=(3, 20)) * 2)[y] + rng.normal(size=(120, 20))
    np.savez(other, x_train=x[:90].astype(np.float32), y_train=y[:90], x_test=x[90:].astype(np.float32), y_test=y[90:])
    status, _, err = cli(capsys, "lottery", "--dataset", f"npz:{parent}", "--model", "lenet-300-100", "--batch-size", "40",
                         "--duration", "1ep", "--fraction", "0.5", "--levels", "1", "--controls", "", "--threads", "1",
                         "--device", "cpu")
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    status, out, err = cli(capsys, "branch", run.name, "retrain", "--dataset", f"npz:{other}", "--exclude", "fc1",
                           "--threads", "1", "--device", "cpu")
    assert status == 0, err
    expected = (6000 + 15000 + 300) / (6000 + 30000 + 300)
    assert "58.7% weights" in out
    (branch,) = (run / "branches").glob("retrain-*")
    summary = json.loads((branch / "summary.json").read_text())
    assert summary["density"] == pytest.approx(expected)
    assert json.loads((branch / "train/done.json").read_text())["density"] == pytest.approx(expected)
    layers = {r["name"]: r for r in summary["layers"]}
    assert layers["fc3.weight"]["nnz"] == 300 and layers["fc1.weight"]["nnz"] == 6000 and layers["fc2.weight"]["nnz"] == 15000


# --- 3: settings a run does not read do not split it --------------------------------------------

def test_static_mask_with_and_without_delta_t_is_one_run(tiny_npz, store, capsys):
    args = ["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "1ep", "--method", "static", "--density", "0.2", "--threads", "1", "--device", "cpu"]
    status, _, err = cli(capsys, *args, "--delta-t", "10")
    assert status == 0, err
    (done,) = store.glob("sparse-*/train/done.json")
    stamp = done.stat().st_mtime_ns
    record = json.loads(next(store.glob("sparse-*/config.json")).read_text())
    assert record["config"]["sparse"]["delta_t"] == 10 and "delta_t" not in record["canonical"]["sparse"]
    status, _, err = cli(capsys, *args)
    assert status == 0, err
    assert len(list(store.glob("sparse-*"))) == 1 and done.stat().st_mtime_ns == stamp  # found finished


def test_a_sweep_grid_over_an_unread_setting_makes_one_run_of_the_method_that_ignores_it():
    from jackpot.launch.grid import expand, parse_grid
    points = expand(RunConfig(kind="sparse"), parse_grid(["method=static,rigl", "delta_t=10,20"], "sparse"))
    assert sorted((c.sparse.method, c.sparse.delta_t) for c, _ in points) == [("rigl", 10), ("rigl", 20), ("static", 10)]


# --- 4: the thread count ------------------------------------------------------------------------

@pytest.fixture
def two_threads():
    yield
    torch.set_num_threads(1)  # what conftest sets for every test


def lottery_argv(npz, levels):
    return ["lottery", "--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--batch-size", "40", "--duration", "1ep",
            "--fraction", "0.5", "--levels", str(levels), "--controls", "", "--device", "cpu"]


def test_a_run_refuses_to_be_extended_under_another_thread_count(tiny_npz, store, capsys, two_threads):
    status, _, err = cli(capsys, *lottery_argv(tiny_npz, 1), "--threads", "1")
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    assert json.loads((run / "config.json").read_text())["threads"] == 1
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    config_before = (run / "config.json").read_text()
    status, out, err = cli(capsys, *lottery_argv(tiny_npz, 2), "--threads", "2")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("jackpot: error: ") and "begun with 1 thread(s)" in err and "--threads 1" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing computed or written
    assert (run / "config.json").read_text() == config_before
    # the finished run itself just shows its results under any count: nothing is computed
    status, out, err = cli(capsys, *lottery_argv(tiny_npz, 1), "--threads", "2")
    assert status == 0 and "| 1 | 50.0% |" in out, err
    assert not (run / "level_02").exists()
    # with the count it was begun with, the extension runs
    status, _, err = cli(capsys, *lottery_argv(tiny_npz, 2), "--threads", "1")
    assert status == 0 and (run / "level_02/ticket/done.json").exists(), err
    # a branch records its own count and resumes only under it
    branch = ["branch", run.name, "shuffle", "--device", "cpu"]
    status, _, err = cli(capsys, *branch, "--threads", "1")
    assert status == 0, err
    (bdir,) = (run / "branches").glob("shuffle-*")
    assert json.loads((bdir / "config.json").read_text())["threads"] == 1
    (bdir / "summary.json").unlink()  # as if killed before the end
    status, _, err = cli(capsys, *branch, "--threads", "2")
    assert status == 2 and "begun with 1 thread(s)" in err and not (bdir / "summary.json").exists()


def test_an_interrupted_run_refuses_to_resume_under_another_thread_count(tiny_npz, store, capsys, two_threads):
    status, _, err = cli(capsys, *lottery_argv(tiny_npz, 1), "--threads", "1")
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    (run / "level_01/ticket/done.json").unlink()  # as if killed before the last stage finished
    status, _, err = cli(capsys, *lottery_argv(tiny_npz, 1), "--threads", "2")
    assert status == 2 and "begun with 1 thread(s)" in err
    assert not (run / "level_01/ticket/done.json").exists()
    status, _, err = cli(capsys, "stability", run.name, "--levels", "1", "--threads", "2", "--device", "cpu")
    assert status == 2 and "begun with 1 thread(s)" in err and not (run / "stability").exists()


def test_runs_recorded_before_the_thread_record_take_their_first_invocations_count(tmp_path):
    from jackpot.store import check_threads, run_threads
    (tmp_path / "config.json").write_text(json.dumps({"hash": "x", "config": {}}))
    assert run_threads(tmp_path) is None
    check_threads(tmp_path)  # unknown: nothing to compare
    (tmp_path / "env.json").write_text(json.dumps({"history": [{"environment": {"threads": 3}},
                                                               {"environment": {"threads": 1}}]}))
    assert run_threads(tmp_path) == 3
    from jackpot.errors import JackpotError
    with pytest.raises(JackpotError, match="begun with 3 thread"):
        check_threads(tmp_path)


# --- 14: class counts and empty splits ----------------------------------------------------------

def _npz(path, y_train=None, test_rows=60):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20)).astype(np.float32)
    y = rng.integers(0, 4, size=300) if y_train is None else y_train
    np.savez(path, x_train=x[:240], y_train=y[:240], x_test=x[240:240 + test_rows], y_test=rng.integers(0, 4, size=300)[240:240 + test_rows])
    return path


@pytest.mark.parametrize("case, words", [
    ("empty-test", "x_test is empty"),
    ("label-5000000", "largest label 5000000 means 5000001 classes, but only 5 of the labels"),
    ("label-2**31", "largest label 2147483648 means 2147483649 classes"),
])
def test_bad_class_counts_and_empty_splits_are_one_line_before_any_run(case, words, tmp_path, store, capsys):
    y = np.random.default_rng(0).integers(0, 4, size=300)
    if case == "label-5000000":
        y[7] = 5_000_000
    if case == "label-2**31":
        y = y.astype(np.int64)
        y[7] = 2 ** 31
    path = _npz(tmp_path / "bad.npz", y, test_rows=0 if case == "empty-test" else 60)
    status, _, err = cli(capsys, "pai", "--dataset", f"npz:{path}", "--duration", "1it", "--threads", "1", "--device", "cpu")
    assert status == 2 and err.startswith("jackpot: error: npz file") and err.count("\n") == 1
    assert words in err
    assert not store.exists()


def test_class_count_is_the_largest_label_plus_one_with_at_least_half_present(tmp_path):
    from jackpot.data.npzfile import read_npz
    from jackpot.errors import JackpotError
    y = np.random.default_rng(0).choice([0, 1, 3], size=300)  # class 2 absent: 3 of 4 present
    assert read_npz(_npz(tmp_path / "a.npz", y)).num_classes == 4
    y = np.random.default_rng(0).choice([0, 5], size=300)  # 2 of 6 present
    with pytest.raises(JackpotError, match="means 6 classes, but only 2"):
        read_npz(_npz(tmp_path / "b.npz", y))
    y = np.full(300, 2 ** 63, dtype=np.uint64)
    with pytest.raises(JackpotError, match="too large for a class index"):
        read_npz(_npz(tmp_path / "c.npz", y))


# --- after issue 11: branch options a pai run does not read; damaged masks ---------------------------

def _tiny(npz, kind, *extra):
    return [kind, "--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--batch-size", "40", "--duration", "1ep",
            "--threads", "1", "--device", "cpu", *extra]


def test_branch_of_a_pai_run_refuses_the_lottery_only_level_and_retrain(tiny_npz, store, capsys):
    assert cli(capsys, *_tiny(tiny_npz, "pai"))[0] == 0
    (run,) = store.glob("pai-*")
    for extra in (["--level", "0"], ["--retrain", "finetune"]):
        status, _, err = cli(capsys, "branch", run.name, "reinit", *extra, "--threads", "1", "--device", "cpu")
        assert status == 2 and err.count("\n") == 1 and "--level and --retrain" in err, err
    assert not (run / "branches").exists()
    status, _, err = cli(capsys, "branch", run.name, "reinit", "--threads", "1", "--device", "cpu")
    assert status == 0, err
    assert len(list((run / "branches").iterdir())) == 1


@pytest.mark.parametrize("kind, mask, stage", [("pai", "mask.pt", "train"),
                                               ("lottery", "level_01/mask.pt", "level_01/ticket")])
def test_a_damaged_mask_is_recomputed_unless_a_finished_stage_was_trained_on_it(tiny_npz, store, capsys, tmp_path,
                                                                                  kind, mask, stage):
    argv = _tiny(tiny_npz, kind, *(["--fraction", "0.5", "--levels", "1", "--controls", ""] if kind == "lottery" else []))
    assert cli(capsys, *argv)[0] == 0
    (run,) = store.glob(f"{kind}-*")
    original, trained = Masks.load(run / mask), torch.load(run / stage / "final.pt", weights_only=True)
    (run / mask).write_bytes((run / mask).read_bytes()[:100])  # truncated
    status, _, err = cli(capsys, *argv)
    assert status == 2 and err.count("\n") == 1 and "corrupt mask file" in err, err
    assert f"{stage} was trained on it" in err and "move that stage away" in err
    (run / stage).rename(tmp_path / "moved")  # as the message advises
    status, _, err = cli(capsys, *argv)
    assert status == 0 and "recomputing it" in err, err
    again = Masks.load(run / mask)
    assert again.keys() == original.keys() and all(torch.equal(again[n], original[n]) for n in original)
    retrained = torch.load(run / stage / "final.pt", weights_only=True)
    assert all(torch.equal(retrained[k], trained[k]) for k in trained)
