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


def test_control_arms_hash_alike_in_any_order_or_repeat_and_rescale_is_reinit_only():
    from jackpot.config import LotteryConfig, RunConfig, run_hash
    from jackpot.procedures.branches import BranchSpec
    from jackpot.errors import JackpotError
    import dataclasses
    spelled = lambda text: run_hash(dataclasses.replace(RunConfig(), lottery=LotteryConfig(controls=text)))
    assert spelled("random,reinit") == spelled("reinit,random,reinit") == run_hash(RunConfig())
    assert spelled("random") == spelled("random,random") != spelled("reinit") != spelled("")
    assert spelled("") != run_hash(RunConfig())  # no controls: another experiment
    with pytest.raises(JackpotError, match="applies to reinit branches, not shuffle"):
        BranchSpec("shuffle", rescale=True)


def test_print_dir_refuses_what_the_run_would_refuse_and_writes_nothing(tiny_npz, store, capsys):
    base = ["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--method", "static", "--print-dir"]
    status, _, err = cli(capsys, *base, "--density", "1.5")
    assert status == 2 and "--density must be in (0, 1]" in err
    status, out, err = cli(capsys, *base, "--density", "0.5")
    assert status == 0 and out.strip().startswith(str(store / "sparse-")), err
    assert written(store) == []


def test_quiet_workers_print_only_the_table(tiny_npz, store, capfd):
    # capfd, not capsys: the workers are other processes, writing to the file descriptor
    argv = ["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--method", "static",
            "--density", "0.5", "--duration", "1ep", "--device", "cpu", "--seeds", "0,1", "--workers", "2",
            "--threads", "1"]
    assert main([*argv, "--store", str(store / "loud")]) == 0
    assert "[seed 1]" in capfd.readouterr().out  # what the workers say is seen here
    assert main([*argv, "--store", str(store / "quiet"), "--quiet"]) == 0
    out = capfd.readouterr().out
    assert "[seed" not in out and "done:" not in out and "| static (erk) | 50.0% |" in out


@pytest.mark.parametrize("density, stored", [("0.7", {"weight"}), ("0.05", {"crow", "col", "values"})])
def test_an_export_stores_each_weight_the_smaller_way_and_never_replaces_a_file_unasked(
        tiny_npz, store, capsys, density, stored):
    from jackpot.export import load_exported
    status, _, err = cli(capsys, "pai", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100",
                         "--duration", "1ep", "--score", "magnitude", "--budget", "uniform", "--density", density,
                         "--device", "cpu", "--threads", "1")
    assert status == 0, err
    (run,) = store.glob("pai-*")
    out = store / "m.pt"
    status, printed, err = cli(capsys, "export", run.name, "-o", str(out))
    assert status == 0, err
    data = torch.load(out, weights_only=True)
    for name, spec in data["layers"].items():  # CSR: 4-byte values + 4-byte columns per kept weight
        assert stored <= set(spec) and not ({"weight", "values"} - stored) & set(spec), name
    trained = torch.load(run / "train" / "final.pt", weights_only=True)
    mask = torch.load(run / "train" / "mask.pt", weights_only=True)
    dense_bytes = sum(v.numel() * v.element_size() for v in trained.values())
    if density == "0.7":  # whole weights: the file is about the dense state, not 1.4x it
        assert out.stat().st_size < 1.05 * dense_bytes
    model = load_exported(out)
    x = torch.randn(5, 20)
    w = {k: v * mask[k] if k in mask else v for k, v in trained.items()}
    reference = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(torch.relu(
        torch.nn.functional.linear(x, w["fc1.weight"], w["fc1.bias"])), w["fc2.weight"], w["fc2.bias"])),
        w["fc3.weight"], w["fc3.bias"])
    torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=0)
    before = out.read_bytes()
    status, _, err = cli(capsys, "export", run.name, "-o", str(out))
    assert status == 2 and "the file exists; pass --force" in err and out.read_bytes() == before
    status, _, err = cli(capsys, "export", run.name, "-o", str(out), "--force")
    assert status == 0, err


def test_branch_help_shows_the_parent_runs_defaults_or_says_it_has_none_yet(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    with pytest.raises(SystemExit) as e:
        main(["branch", "--help"])
    generic = capsys.readouterr().out
    assert e.value.code == 0 and "(default: the parent run's)" in generic and "default: mnist1d" not in generic
    with pytest.raises(SystemExit) as e:
        main(["branch", run.name, "reinit", "--help"])
    own = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "tiny.npz)" in own and "(default: 1ep)" in own  # (paths wrap at hyphens)
    with pytest.raises(SystemExit) as e:
        main(["branch"])
    assert e.value.code == 2 and "required: run, kind" in capsys.readouterr().err


def test_compare_of_a_garbled_user_file_says_what_to_give_not_to_recompute(tmp_path, capsys):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"not a torch file")
    good = tmp_path / "mask.pt"
    Masks({"w": torch.ones(2, 2, dtype=torch.bool)}).save(good)
    status, _, err = cli(capsys, "compare", str(bad), str(good))
    assert status == 2 and "give a mask.pt a run wrote, or RUN[:LEVEL]" in err and "recompute" not in err


def test_a_retrain_mode_a_branch_does_not_read_makes_no_second_branch(tiny_npz, store, capsys):
    """--retrain rewind on a rewinding run, and --retrain finetune for a reinit branch of a run
    rewinding to 0 (fresh weights train 0 -> T either way): the same branch, one directory."""
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    for kind, modes in (("reinit", ("", "finetune", "rewind")), ("shuffle", ("", "rewind"))):
        for mode in modes:
            status, _, err = cli(capsys, "branch", run.name, kind, "--device", "cpu", "--threads", "1",
                                 *(["--retrain", mode] if mode else []))
            assert status == 0, err
        assert len(list((run / "branches").glob(f"{kind}-*"))) == 1, kind
    status, _, err = cli(capsys, "branch", run.name, "shuffle", "--device", "cpu", "--threads", "1",
                         "--retrain", "finetune")  # trained weights, not the rewind point's: its own branch
    assert status == 0, err
    assert len(list((run / "branches").glob("shuffle-*"))) == 2


@pytest.mark.parametrize("extra", [["--corrupt", "random-labels"], ["--controls", "random,random"]])
def test_a_run_whose_hash_spells_a_setting_its_own_way_reads_back_undamaged(tiny_npz, store, capsys, extra):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5", *extra))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    status, out, err = cli(capsys, "ls")
    assert status == 0 and run.name in out and "damaged" not in out, out
    status, out, err = cli(capsys, "show", run.name)
    assert status == 0 and "damaged" not in err, err


def test_two_npz_datasets_of_one_file_name_are_two_settings_in_a_report(tmp_path, store, capsys):
    from conftest import write_tiny_npz
    from jackpot.analysis.points import collect
    from jackpot.store import list_runs
    for folder in ("a", "c"):
        (tmp_path / folder).mkdir()
        npz = write_tiny_npz(tmp_path / folder / "b.npz")
        status, _, err = cli(capsys, "sparse", "--dataset", f"npz:{npz}", "--model", "lenet-300-100",
                             "--method", "static", "--density", "0.5", "--duration", "1ep", "--device", "cpu")
        assert status == 0, err
    settings = {p["setting"] for p in collect(list_runs(store))}
    assert settings == {f"npz:{tmp_path / 'a' / 'b.npz'} / lenet-300-100", f"npz:{tmp_path / 'c' / 'b.npz'} / lenet-300-100"}


def test_a_transfer_to_another_dataset_trains_the_epochs_it_asks_for_of_that_dataset(tiny_npz, store, tmp_path, capsys):
    import numpy as np
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5", "--duration", "2ep"))
    assert status == 0, err  # 240 examples in batches of 40: 6 steps an epoch, 12 in all
    (run,) = store.glob("lottery-*")
    rng = np.random.default_rng(1)
    other = tmp_path / "other.npz"  # 120 training examples: 3 steps an epoch
    np.savez(other, x_train=rng.normal(size=(120, 20)).astype(np.float32), y_train=rng.integers(0, 4, 120),
             x_test=rng.normal(size=(40, 20)).astype(np.float32), y_test=rng.integers(0, 4, 40))
    for duration, steps in (("2ep", 6), ("3ep", 9)):
        status, _, err = cli(capsys, "branch", run.name, "retrain", "--dataset", f"npz:{other}",
                             "--duration", duration, "--device", "cpu", "--threads", "1")
        assert status == 0, err
        (branch,) = [b for b in (run / "branches").glob("retrain-*")
                     if json.loads((b / "config.json").read_text())["config"]["train"]["duration"] == duration]
        last = json.loads((branch / "train" / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == steps and last["epoch"] == pytest.approx(int(duration[0])), duration


def test_a_run_is_not_continued_or_shown_on_data_that_changed_since(tmp_path, store, capsys):
    import numpy as np
    npz = tmp_path / "my.npz"
    argv = ["sparse", "--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--method", "static",
            "--density", "0.5", "--duration", "1ep", "--device", "cpu"]

    def write(rows, seed):
        rng = np.random.default_rng(seed)
        np.savez(npz, x_train=rng.normal(size=(rows, 20)).astype(np.float32), y_train=rng.integers(0, 4, rows),
                 x_test=rng.normal(size=(40, 20)).astype(np.float32), y_test=rng.integers(0, 4, 40))
    write(120, 0)
    assert cli(capsys, *argv)[0] == 0
    (run,) = store.glob("sparse-*")
    summary = (run / "summary.json").read_bytes()
    write(240, 5)  # the same path, other data
    status, _, err = cli(capsys, *argv)
    assert status == 2 and err.count("\n") == 1 and "changed since run" in err and "num_train 120 -> 240" in err
    assert (run / "summary.json").read_bytes() == summary


def test_a_custom_map_naming_a_layer_twice_is_refused():
    from jackpot.config import parse_layer_map
    from jackpot.errors import JackpotError
    assert parse_layer_map("fc1=0.5,fc2=0.2", "--layer-densities") == {"fc1": 0.5, "fc2": 0.2}
    with pytest.raises(JackpotError, match="--layer-densities names fc1 twice"):
        parse_layer_map("fc1=0.5,fc2=0.2,fc1=0.2", "--layer-densities")


def test_inspect_takes_the_image_size_a_folder_run_trains_at(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / split / c / "0.png")
    params = {}
    for size in ("16", "32"):
        status, out, err = cli(capsys, "inspect", "--model", "lenet-300-100", "--budget", "uniform", "--density", "0.5",
                               "--dataset", f"folder:{tmp_path}", "--image-size", size, "--json")
        assert status == 0, err
        params[size] = json.loads(out)
    first = lambda info: next(r for r in info["layers"] if r["name"] == "fc1.weight")
    # LeNet-300-100's first layer reads the flattened 3 x size x size image: 300 rows of it
    assert first(params["16"])["params"] == 300 * 3 * 16 * 16
    assert first(params["32"])["params"] == 300 * 3 * 32 * 32


def test_a_report_replaces_its_own_earlier_files_only_and_never_writes_into_a_run(tmp_path, capsys, monkeypatch):
    from conftest import write_tiny_npz
    stores = {}
    for name in ("first", "second"):
        npz = write_tiny_npz(tmp_path / f"{name}.npz")
        stores[name] = tmp_path / f"store-{name}"
        monkeypatch.setenv("JACKPOT_STORE", str(stores[name]))
        assert cli(capsys, "sparse", "--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--method", "static",
                   "--density", "0.5", "--duration", "1ep", "--device", "cpu")[0] == 0
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli(capsys, "report", str(stores["first"]), "-o", str(out))[0] == 0
    first = {p.name for p in out.glob("*first-npz*")}
    assert first and all("first" in n for n in first)
    assert cli(capsys, "report", str(stores["second"]), "-o", str(out))[0] == 0
    names = {p.name for p in out.iterdir()}
    assert not names & first and any("second-npz" in n for n in names)  # the first report's figures went
    assert (out / "notes.txt").read_text() == "mine"  # a file the report did not write stays
    (run,) = stores["second"].glob("sparse-*")
    status, _, err = cli(capsys, "report", str(stores["second"]), "-o", str(run))
    assert status == 2 and "is a run directory" in err and not (run / "results.md").exists()


def test_show_lists_a_runs_branches_with_their_results(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    assert cli(capsys, "branch", run.name, "shuffle", "--device", "cpu", "--threads", "1")[0] == 0
    (branch,) = (run / "branches").glob("shuffle-*")
    summary = json.loads((branch / "summary.json").read_text())
    status, out, err = cli(capsys, "show", run.name)
    assert status == 0, err
    line = next(l for l in out.splitlines() if branch.name in l)
    assert f"{100 * summary['density']:.1f}% weights" in line and f"test acc {100 * summary['final']['test_acc']:.1f}%" in line
    status, out, _ = cli(capsys, "show", run.name, "--json")
    (entry,) = json.loads(out)["branches"]
    assert entry == {"name": branch.name, "done": True, "density": summary["density"],
                     "final_test_acc": summary["final"]["test_acc"]}


def test_branch_takes_options_between_its_two_positionals(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *tiny_lottery(tiny_npz, "--levels", "1", "--fraction", "0.5"))
    assert status == 0, err
    (run,) = store.glob("lottery-*")
    status, _, err = cli(capsys, "branch", run.name, "--level", "1", "shuffle", "--device", "cpu", "--threads", "1")
    assert status == 0, err
    assert len(list((run / "branches").glob("shuffle-L1-*"))) == 1


def test_gmp_refuses_a_density_that_empties_a_layer_by_its_own_uniform_counts(tiny_npz, store, capsys):
    # fc3 (4 x 100 = 400 weights) keeps round(4e-4 * 400) = 0 under GMP's per-layer density
    status, _, err = cli(capsys, "sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100",
                         "--method", "gmp", "--density", "4e-4", "--duration", "1ep", "--device", "cpu")
    assert status == 2 and "fc3.weight" in err and "--distribution uniform" in err, err
    assert written(store) == []
