"""Defects a new user's break-it pass found (no issue of their own): refusals made before anything
is written, options that must not change the run, and one clear line for each bad input."""
import json

import pytest
import torch

from jackpot.cli import main
from jackpot.sparse import Masks


def cli(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def tiny_lottery(npz, *extra):
    return ["lottery", "--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "1ep", "--device", "cpu", "--threads", "1", "--controls", "", *extra]


def written(store):
    return sorted(p for p in store.rglob("*")) if store.exists() else []


@pytest.mark.parametrize("extra, words", [
    (["--budget", "foo"], "unknown budget 'foo'"),
    (["--budget", "custom"], "--budget custom needs per-layer densities"),
    (["--budget", "uniform", "--fraction", "0.99", "--levels", "5"], "level 2 would prune fc3.weight to zero weights"),
])
def test_a_lottery_budget_is_refused_before_level_0_trains(tiny_npz, store, capsys, extra, words):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", *extra))
    assert status == 2 and err.count("\n") == 1 and words in err, err
    assert written(store) == []


def test_a_global_lottery_budget_keeps_the_global_top_magnitudes_of_the_trained_ticket(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5", "--budget", "global"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    mask = Masks.load(run / "level_01" / "mask.pt")
    trained = torch.load(run / "level_00" / "ticket" / "final.pt", weights_only=True)
    flat = torch.cat([trained[n].abs().flatten() for n in mask])  # independent: one global ranking
    keep = round(0.5 * flat.numel())
    threshold = flat.sort(descending=True).values[keep - 1]
    assert sum(int(m.sum()) for m in mask.values()) == keep
    for n, m in mask.items():
        assert torch.equal(m, trained[n].abs() >= threshold), n
    assert len({round(int(m.sum()) / m.numel(), 3) for m in mask.values()}) > 1  # not uniform


@pytest.mark.parametrize("kind", ["lottery", "sparse", "pai"])
def test_a_seed_listed_twice_is_refused_not_counted_twice(tiny_npz, store, capsys, kind):
    argv = tiny_lottery(tiny_npz) if kind == "lottery" else [
        kind, "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--duration", "1ep", "--device", "cpu"]
    status, _, err = cli(capsys, *argv, "--seeds", "0,1,0")
    assert status == 2 and err == "jackpot: error: --seeds 0,1,0: seed 0 is listed twice\n"
    assert written(store) == []


def test_sparse_training_refuses_a_density_that_empties_every_layer(tiny_npz, store, capsys):
    status, _, err = cli(capsys, "sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100",
                         "--method", "rigl", "--density", "1e-9", "--duration", "1ep", "--device", "cpu")
    assert status == 2 and err.count("\n") == 1
    assert "layer collapse: fc1.weight, fc2.weight, fc3.weight would keep no weights" in err
    assert written(store) == []


@pytest.mark.parametrize("argv, words", [
    (["--density", "1.5"], "--density must be in (0, 1], got 1.5"),
    (["--model", "lenet-300-100", "--density", "1e-9"], "layer collapse: fc1.weight"),
    (["--model", "lenet-300-100", "--density", "0.1", "--budget", "global"], "--budget global ranks scores"),
])
def test_bench_refuses_an_impossible_mask_in_one_line(capsys, argv, words):
    status, _, err = cli(capsys, "bench", *argv)
    assert status == 2 and err.count("\n") == 1 and words in err, err


def test_a_lottery_run_names_its_missing_level_arm_and_bad_level_reference(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    for argv, words in ((["bench", run.name, "--arm", "foo"], "unknown --arm 'foo'"),
                        (["bench", run.name, "--level", "9"], "has levels 0-1: there is no level 9"),
                        (["bench", run.name, "--arm", "random"], "has no random arm at level 1"),
                        (["compare", f"{run.name}:x", f"{run.name}:1"], "must be a whole number")):
        status, _, err = cli(capsys, *argv)
        assert status == 2 and err.count("\n") == 1 and words in err, (argv, err)


def test_stability_at_another_alphas_grid_reevaluates_the_saved_copies(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    point = run / "stability" / "level_01-k0"
    results = []
    for alphas in ("3", "5", "5"):
        status, out, err = cli(capsys, "stability", run.name, "--levels", "1", "--rewinds", "0it",
                               "--alphas", alphas, "--device", "cpu", "--threads", "1")
        assert status == 0, err
        results.append((json.loads((point / "result.json").read_text()), (point / "a" / "final.pt").stat().st_mtime_ns))
    (three, t3), (five, t5), (again, t5b) = results
    assert three["alphas"] == [0.0, 0.5, 1.0] and five["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert five["errors"][::2] == three["errors"]  # the same copies: equal at the shared points
    assert t3 == t5 == t5b and again == five  # not trained again; a third call reads the result
