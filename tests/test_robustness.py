"""Refused input leaves nothing behind, damaged files are recomputed or one clear line, the store
works read-only and shared, identical commands can wait for each other, and checkpoints can be
written mid-epoch without losing bit-identical resume (issue 11, items 9-13 and 15-17)."""
import builtins
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jackpot.cli import main
from jackpot.config import RunConfig, TrainConfig, parse_checkpoint_every, run_hash
from jackpot.errors import JackpotError
from jackpot.store import atomic_torch_save, atomic_write_text


def small(npz, kind="lottery", *extra):
    common = ["--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--batch-size", "40", "--duration", "2ep",
              "--threads", "1", "--device", "cpu"]
    if kind == "lottery":
        common += ["--fraction", "0.5", "--levels", "1"]
    return [kind, *common, *extra]


def cli(capsys, *argv):
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def one_line_error(status, err, *words):
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("jackpot: error:"), err
    for w in words:
        assert w in err, err


def run_dir(store, kind):
    (path,) = list(Path(store).glob(f"{kind}-*"))
    return path


def weights(path):
    return torch.load(path, weights_only=True)


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def read_only(monkeypatch):
    """Make a directory tree unwritable: chmod when not root; as root (which chmod does not stop)
    every write under it fails as on a read-only mount (EROFS)."""
    trees = []

    def under(path) -> bool:
        try:
            p = Path(os.fspath(path)).absolute()
        except TypeError:  # a file descriptor
            return False
        return any(p == t or t in p.parents for t in trees)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    if os.geteuid() == 0:
        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
        real_replace, real_unlink = os.replace, os.unlink

        def fake_open(file, mode="r", *a, **k):
            if under(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *a, **k)

        def fake_os_open(path, flags, *a, **k):
            if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
                refuse(path)
            return real_os_open(path, flags, *a, **k)

        def guard(real):
            def fake(path, *a, **k):
                if under(path):
                    refuse(path)
                return real(path, *a, **k)
            return fake
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", guard(real_mkdir))
        monkeypatch.setattr(os, "replace", lambda src, dst, **k: refuse(dst) if under(dst) else real_replace(src, dst, **k))
        monkeypatch.setattr(os, "unlink", guard(real_unlink))

    def make(path):
        path = Path(path).absolute()
        trees.append(path)
        if os.geteuid() != 0:
            subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        return path
    yield make
    if os.geteuid() != 0:
        for t in trees:
            subprocess.run(["chmod", "-R", "u+w", str(t)], check=True)


# --- 9, 10: refused input leaves no run directory; a sweep refuses before launching anything -------

@pytest.mark.parametrize("argv, words", [
    # magnitude pruning of mnist1d-mlp to 5% empties two layers (layer collapse)
    (["pai", "--duration", "1ep", "--density", "0.05", "--score", "magnitude"], ["layer collapse"]),
    (["pai", "--duration", "1ep", "--budget", "custom", "--layer-densities", "linear1=0.0"], ["layer collapse"]),
    (["pai", "--duration", "1ep", "--budget", "custom", "--layer-densities", "fc1=0.5"], ["fc1"]),
    # 2 epochs of 40 steps: t_end = 60 steps leaves no update at --delta-t 100
    (["sparse", "--method", "rigl", "--duration", "2ep"], ["leaves no mask update"]),
])
def test_refused_pai_and_sparse_leave_no_run(store, capsys, argv, words):
    status, _, err = cli(capsys, *argv, "--threads", "1", "--device", "cpu")
    one_line_error(status, err, *words)
    assert not store.exists() or not any(store.iterdir())


def test_pai_mask_is_found_once_before_the_run_directory(tiny_npz, store, capsys, monkeypatch):
    import jackpot.procedures.pai as pai
    calls = []
    real = pai.pai_masks

    def counted(ctx, model):
        calls.append(ctx.run.path.exists())
        return real(ctx, model)
    monkeypatch.setattr(pai, "pai_masks", counted)
    status, _, err = cli(capsys, *small(tiny_npz, "pai"))
    assert status == 0, err
    assert calls == [False]  # computed once, while the run directory did not exist yet
    run = run_dir(store, "pai")
    report = json.loads((run / "budget.json").read_text())
    assert report and (run / "mask.pt").exists()
    status, _, _ = cli(capsys, *small(tiny_npz, "pai"))  # a finished run loads its mask
    assert status == 0 and calls == [False]


def test_sweep_preflight_runs_each_runs_checks_before_launching(store, capsys):
    status, out, err = cli(capsys, "sweep", "sparse", "--duration", "2ep", "--grid", "density=0.1,0.2",
                           "--grid", "method=static,rigl")
    one_line_error(status, err, "leaves no mask update", "grid point", "method=rigl")
    assert "failed" not in out and not store.exists()  # no sweep record, no run directory


# --- 11: a stage whose files are missing or damaged is recomputed -----------------------------------

def test_truncated_final_weights_are_noticed_and_recomputed(tiny_npz, store, capsys):
    assert cli(capsys, *small(tiny_npz))[0] == 0
    run = run_dir(store, "lottery")
    final = run / "level_00" / "ticket" / "final.pt"
    original = weights(final)
    final.write_bytes(final.read_bytes()[:1000])  # truncated (a full disk, a killed copy...)
    status, out, _ = cli(capsys, "ls")
    assert status == 0 and "partial" in out and "done" not in out
    status, out, err = cli(capsys, *small(tiny_npz))
    assert status == 0 and "recomputing" in err and "level_00/ticket" in err
    assert same_weights(weights(final), original)  # recomputed bit-identically
    assert "done" in cli(capsys, "ls")[1]


def test_sparse_run_with_its_mask_moved_away_recomputes_it(tiny_npz, store, capsys, tmp_path):
    argv = small(tiny_npz, "sparse", "--method", "static", "--density", "0.1")
    assert cli(capsys, *argv)[0] == 0
    run = run_dir(store, "sparse")
    summary = json.loads((run / "summary.json").read_text())
    mask = run / "train" / "mask.pt"
    mask.rename(tmp_path / "moved.pt")
    assert "partial" in cli(capsys, "ls")[1]
    status, out, err = cli(capsys, *argv)
    assert status == 0 and "mask.pt is missing" in err
    again = json.loads((run / "summary.json").read_text())
    assert again["density"] == summary["density"] < 0.2  # not 100% weights
    assert again["inference_flops_ratio"] == summary["inference_flops_ratio"] < 0.5
    assert same_weights(weights(mask), weights(tmp_path / "moved.pt"))


def test_moving_a_corrupt_rewind_point_away_recomputes_it(tiny_npz, store, capsys, tmp_path):
    argv = small(tiny_npz, "lottery", "--rewind", "3it", "--controls", "random")
    assert cli(capsys, *argv)[0] == 0
    run = run_dir(store, "lottery")
    rewind = run / "rewind.pt"
    original = weights(rewind)
    rewind.write_bytes(bytes(rewind.stat().st_size))  # garbled, same size: only loading notices
    status, _, err = cli(capsys, *argv[:-2], "--levels", "2", "--controls", "random")  # level 2 needs it
    one_line_error(status, err, "corrupt rewind weights", "move it away and re-run")
    rewind.rename(tmp_path / "garbled.pt")  # as the message advises
    status, _, err = cli(capsys, *argv, "--levels", "2")
    assert status == 0 and "level_00/ticket" in err and "rewind.pt is missing" in err
    assert same_weights(weights(rewind), original)
    assert (run / "level_02" / "ticket" / "done.json").exists()


def test_empty_stage_record_is_not_finished(tiny_npz, store, capsys, tmp_path):
    assert cli(capsys, *small(tiny_npz))[0] == 0
    run = run_dir(store, "lottery")
    (run / "level_01" / "random" / "done.json").write_text("{}")
    (run / "level_01" / "ticket" / "done.json").write_text("{}")
    status, out, _ = cli(capsys, "ls")
    assert status == 0 and "IMP 0/1" in out and "partial" in out
    status, out, _ = cli(capsys, "show", run.name)
    assert status == 0 and "| 0 | 100.0% |" in out and "| 1 |" not in out
    status, _, err = cli(capsys, "report", "-o", tmp_path / "report")
    assert status == 0, err
    table = (tmp_path / "report" / "results.md").read_text()
    assert "IMP reinit" in table and "IMP random" not in table  # the damaged arm is left out
    status, _, err = cli(capsys, *small(tiny_npz))
    assert status == 0 and err.count("recomputing") == 2
    assert "IMP 1/1" in cli(capsys, "ls")[1]
    assert json.loads((run / "level_01" / "ticket" / "done.json").read_text())["density"] == 0.5


# --- 12: OS failures and damaged files are one clear line ------------------------------------------

def test_full_disk_is_one_clear_line(tiny_npz, store, capsys, monkeypatch):
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, "/dev/full"))  # ENOSPC
    status, _, err = cli(capsys, *small(tiny_npz, "pai"))
    one_line_error(status, err, "no space left on device", "init.pt")


def test_store_that_is_a_file_is_one_clear_line(tiny_npz, tmp_path, capsys):
    file = tmp_path / "store"
    file.write_text("not a directory")
    status, _, err = cli(capsys, *small(tiny_npz, "pai"), "--store", file)
    one_line_error(status, err, f"{file} is a file, not a directory")


def test_read_only_store_is_one_clear_line(tiny_npz, tmp_path, capsys, read_only):
    store = tmp_path / "store"
    store.mkdir()
    read_only(store)
    status, _, err = cli(capsys, *small(tiny_npz, "pai"), "--store", store)
    one_line_error(status, err, str(store), "read-only file system" if os.geteuid() == 0 else "permission denied")


def test_final_weights_that_do_not_fit_are_one_line_then_recomputed(tiny_npz, store, capsys, tmp_path):
    assert cli(capsys, *small(tiny_npz, "pai"))[0] == 0
    run = run_dir(store, "pai")
    final = run / "train" / "final.pt"
    good = weights(final)
    torch.save({k: torch.zeros(3) for k in good}, final)  # well-formed, wrong shapes
    record = json.loads((run / "train" / "done.json").read_text())
    record.setdefault("files", {})["final.pt"] = final.stat().st_size  # a record that vouches for it
    (run / "train" / "done.json").write_text(json.dumps(record))
    status, _, err = cli(capsys, "export", run.name, "-o", tmp_path / "m.pt")
    one_line_error(status, err, "does not fit the model", "move it away")
    status, _, err = cli(capsys, *small(tiny_npz, "pai"))
    assert status == 0 and "does not fit the model" in err and "recomputing" in err
    assert same_weights(weights(final), good)
    assert cli(capsys, "export", run.name, "-o", tmp_path / "m.pt")[0] == 0


def test_damaged_run_config_is_one_clear_line(tiny_npz, store, capsys):
    assert cli(capsys, *small(tiny_npz, "pai", "--density", "0.2"))[0] == 0
    run = run_dir(store, "pai")
    path = run / "config.json"
    record = json.loads(path.read_text())
    del record["config"]["pai"]["density"]  # would silently become the default 0.1
    path.write_text(json.dumps(record))
    status, _, err = cli(capsys, "show", run.name)
    one_line_error(status, err, "damaged run config", "pai.density")
    record["config"]["pai"]["density"] = "lots"
    path.write_text(json.dumps(record))
    one_line_error(*cli(capsys, "show", run.name)[::2], "pai.density must be float")
    del record["config"]
    path.write_text(json.dumps(record))
    one_line_error(*cli(capsys, "show", run.name)[::2], "damaged run config")


def test_incomplete_summary_is_not_finished(tiny_npz, store, capsys):
    assert cli(capsys, *small(tiny_npz, "sparse", "--method", "static"))[0] == 0
    run = run_dir(store, "sparse")
    (run / "summary.json").write_text("{}")
    status, out, _ = cli(capsys, "ls")
    assert status == 0 and "partial" in out
    assert cli(capsys, *small(tiny_npz, "sparse", "--method", "static"))[0] == 0
    assert "done" in cli(capsys, "ls")[1]


def test_crafted_exported_model_is_one_clear_error(tmp_path):
    from jackpot.export import load_exported
    path = tmp_path / "crafted.pt"
    for crafted in ({"kind": "jackpot-export", "version": 1},
                    {"kind": "jackpot-export", "version": 1, "batch_size": 1, "state": {},
                     "arch": {"name": "lenet-300-100", "input_shape": [1, 28, 28], "num_classes": 10},
                     "layers": {"fc1": {"shape": [3]}}}):
        torch.save(crafted, path)
        with pytest.raises(JackpotError, match="damaged jackpot exported model"):
            load_exported(path)
    with pytest.raises(JackpotError, match="path of a file"):
        load_exported({"kind": "jackpot-export"})


# --- 13: ls and show work on a read-only store --------------------------------------------------

def test_ls_and_show_work_on_a_read_only_store(tiny_npz, store, capsys, read_only):
    assert cli(capsys, *small(tiny_npz))[0] == 0
    assert cli(capsys, *small(tiny_npz, "sparse", "--method", "static"))[0] == 0
    read_only(store)
    status, out, err = cli(capsys, "ls")
    assert status == 0 and out.count(" done") == 2, err
    for kind in ("lottery", "sparse"):
        status, out, err = cli(capsys, "show", run_dir(store, kind).name)
        assert status == 0 and "weights remaining" in out, err


# --- 15: a second identical command can wait for the first ---------------------------------------

def test_second_identical_command_waits_with_wait(tiny_npz, store, capsys, monkeypatch):
    import threading
    import jackpot.procedures.lottery as lottery
    holding, release = threading.Event(), threading.Event()
    real_train_arm = lottery._train_arm

    def paused_train_arm(*a, **k):  # the first command stops inside its run, holding the lock
        holding.set()
        assert release.wait(120)
        return real_train_arm(*a, **k)
    monkeypatch.setattr(lottery, "_train_arm", paused_train_arm)
    statuses = []
    first = threading.Thread(target=lambda: statuses.append(main(small(tiny_npz))))
    first.start()
    second = None
    try:
        assert holding.wait(60)
        run = run_dir(store, "lottery")
        status, _, err = cli(capsys, *small(tiny_npz))  # the same command, without --wait
        one_line_error(status, err, "being computed by another process", "--wait")
        argv = [sys.executable, "-u", "-m", "jackpot.cli", *small(tiny_npz), "--store", str(store), "--wait"]
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = second.stdout.readline()
        assert line.startswith(f"waiting: run {run}") and second.poll() is None
    finally:
        release.set()
        first.join(120)
    assert statuses == [0]
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "test acc" not in out and f"done: {run}" in out and "| 1 | 50.0% |" in out  # nothing redone


# --- 16: shared stores: files follow the umask; metrics are rewritten atomically ----------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == mode


def test_metrics_truncation_is_atomic(tmp_path, monkeypatch):
    from jackpot.train import loop
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps({"step": s, "test_acc": 0.5}) + "\n" for s in (0, 10, 20))
    path.write_text(text)
    real_open = builtins.open

    class FullDisk:  # the file opens (an in-place rewrite has already emptied it), writes fail
        def __init__(self, f):
            self.f = f

        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return FullDisk(f) if "metrics.jsonl" in str(file) and "w" in mode else f
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    with pytest.raises(JackpotError, match="no space left on device"):
        loop._truncate_metrics(path, 10)
    monkeypatch.undo()
    assert path.read_text() == text  # untouched
    loop._truncate_metrics(path, 10)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [0, 10]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left behind


# --- 17: --checkpoint-every (steps or time), outside the hash, resume still bit-identical ----------

def test_checkpoint_every_is_parsed_and_not_hashed():
    assert parse_checkpoint_every("", 12) == (0, 0.0)
    assert parse_checkpoint_every("5it", 12) == (5, 0.0)
    assert parse_checkpoint_every("1ep", 12) == (12, 0.0)
    assert parse_checkpoint_every("30s", 12) == (0, 30.0)
    assert parse_checkpoint_every("10min", 12) == (0, 600.0)
    assert parse_checkpoint_every("1h", 12) == (0, 3600.0)
    for bad in ("0it", "0s", "10m", "soon"):
        with pytest.raises(JackpotError, match="--checkpoint-every"):
            parse_checkpoint_every(bad, 12)
    assert run_hash(RunConfig(train=TrainConfig(checkpoint_every="200it"))) == run_hash(RunConfig())


def test_bad_checkpoint_every_is_refused_before_the_run(tiny_npz, store, capsys):
    status, _, err = cli(capsys, *small(tiny_npz), "--checkpoint-every", "often")
    one_line_error(status, err, "--checkpoint-every")
    assert not store.exists()


@pytest.mark.parametrize("every, checkpoint_step", [("5it", 10), ("0.000001s", 11)])
def test_kill_mid_epoch_resumes_bit_identical(tiny_npz, tmp_path, capsys, monkeypatch, interrupt_at, every,
                                              checkpoint_step):
    argv = [*small(tiny_npz), "--batch-size", "20", "--checkpoint-every", every]  # 12 steps per epoch
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert cli(capsys, *argv, "--store", clean)[0] == 0

    interrupt_at(11)  # as Ctrl-C (or a kill) in the middle of epoch 0
    assert cli(capsys, *argv, "--store", killed)[0] == 130
    monkeypatch.undo()
    stage = run_dir(killed, "lottery") / "level_00" / "ticket"
    assert torch.load(stage / "checkpoint.pt", weights_only=True)["step"] == checkpoint_step
    assert not (stage / "done.json").exists()
    assert cli(capsys, *argv, "--store", killed)[0] == 0

    a, b = run_dir(clean, "lottery"), run_dir(killed, "lottery")
    for rel in ("level_00/ticket", "level_01/ticket", "level_01/reinit", "level_01/random"):
        assert same_weights(weights(a / rel / "final.pt"), weights(b / rel / "final.pt")), rel
        assert (a / rel / "metrics.jsonl").read_text() == (b / rel / "metrics.jsonl").read_text(), rel


# --- after issue 11: the review's remaining problems ----------------------------------------------

def test_sweep_preflight_finds_a_global_budget_collapse_of_cheap_scores(store, capsys, monkeypatch):
    status, out, err = cli(capsys, "sweep", "pai", "--duration", "1ep", "--grid", "density=0.05,0.5",
                           "--score", "magnitude")
    one_line_error(status, err, "layer collapse", "grid point pai.density=0.05")
    assert "failed" not in out and not store.exists()  # nothing launched, no sweep record
    # the preflight scores only what is cheap: expensive scores are left to each run's own check
    import jackpot.procedures.pai as pai
    from jackpot.config import PaiConfig
    from jackpot.launch.grid import preflight
    scored = []
    monkeypatch.setattr(pai, "pai_masks", lambda ctx, model: scored.append((ctx.cfg.pai.score, ctx.cfg.pai.rounds)))
    points = [("grasp", 1), ("synflow", 100), ("snip", 1), ("synflow", 1), ("random", 100), ("magnitude", 1)]
    preflight([RunConfig(kind="pai", train=TrainConfig(duration="1ep"), pai=PaiConfig(score=s, rounds=r))
               for s, r in points])
    assert scored == [("snip", 1), ("synflow", 1), ("random", 100), ("magnitude", 1)]


@pytest.mark.parametrize("damage", ["random arm's done.json removed", "reinit arm's final.pt truncated"])
def test_ls_says_partial_for_a_lottery_run_with_a_damaged_control(tiny_npz, store, capsys, damage):
    assert cli(capsys, *small(tiny_npz))[0] == 0
    run = run_dir(store, "lottery")
    assert cli(capsys, "ls")[1].split()[-1] == "done"
    if damage.startswith("random"):
        (run / "level_01" / "random" / "done.json").unlink()
    else:
        final = run / "level_01" / "reinit" / "final.pt"
        final.write_bytes(final.read_bytes()[:1000])
    status, out, _ = cli(capsys, "ls")
    assert status == 0 and "IMP 1/1 levels" in out and out.split()[-1] == "partial"


def test_full_disk_while_appending_metrics_or_sweep_logs_is_one_line(tiny_npz, store, capsys, monkeypatch, tmp_path):
    from jackpot.config import DataConfig, ModelConfig
    from jackpot.launch import sweep
    real_open, real_os_open = builtins.open, os.open

    def full_disk_for(suffix):  # appends to these files land on a full disk (ENOSPC)
        def fake_open(file, mode="r", *a, **k):
            if str(file).endswith(suffix) and "a" in mode:
                return real_open("/dev/full", "w")
            return real_open(file, mode, *a, **k)
        monkeypatch.setattr(builtins, "open", fake_open)
    full_disk_for("metrics.jsonl")
    status, _, err = cli(capsys, *small(tiny_npz, "pai"))
    one_line_error(status, err, "no space left on device", "metrics.jsonl")
    cfg = RunConfig(kind="pai", data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40),
                    model=ModelConfig(model="lenet-300-100"), train=TrainConfig(duration="1ep"))
    full_disk_for("run.log")
    with pytest.raises(JackpotError, match=r"no space left on device: could not write .*run\.log"):
        sweep._run_logged(cfg, {"root": str(tmp_path / "other")}, tmp_path / "logs" / "run.log")
    monkeypatch.undo()
    monkeypatch.setattr(os, "open", lambda path, flags, mode=0o777: real_os_open("/dev/full", os.O_WRONLY))
    with pytest.raises(JackpotError, match=r"no space left on device: could not write .*events\.jsonl"):
        sweep.log_event(tmp_path, event="start", run="x")


def test_report_output_that_is_a_file_or_read_only_is_one_line_and_writes_nothing(tiny_npz, store, capsys, tmp_path,
                                                                                    read_only, monkeypatch):
    assert cli(capsys, *small(tiny_npz, "pai"))[0] == 0
    file = tmp_path / "a-file"
    file.write_text("x")
    one_line_error(*cli(capsys, "report", "-o", file)[::2], f"{file} is a file, not a directory")
    assert file.read_text() == "x"
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    why = "read-only file system" if os.geteuid() == 0 else "permission denied"
    for out in (locked, locked / "report"):
        one_line_error(*cli(capsys, "report", "-o", out)[::2], why, str(out))
    assert not any(locked.iterdir())
    # a case no check foresaw: "finished stages are kept" only where stages are computed
    import jackpot.analysis.report as report
    import jackpot.cli.run as cli_run
    monkeypatch.setattr(report, "write_report", lambda *a, **k: 1 / 0)
    status, _, err = cli(capsys, "report", "-o", tmp_path / "r")
    assert status == 1 and "ZeroDivisionError" in err and "finished stages" not in err
    monkeypatch.setattr(cli_run, "run_all", lambda *a, **k: 1 / 0)
    status, _, err = cli(capsys, *small(tiny_npz, "pai"))
    assert status == 1 and "finished stages are kept" in err


def test_damaged_dataset_record_is_one_line_and_a_re_run_rewrites_it(tiny_npz, store, capsys, tmp_path):
    argv = small(tiny_npz, "pai")
    assert cli(capsys, *argv)[0] == 0
    run = run_dir(store, "pai")
    record = run / "dataset.json"
    good = json.loads(record.read_text())
    assert good["input_shape"] == [20] and good["num_classes"] == 4
    for damage in ("{}", None):
        record.write_text(damage) if damage else record.unlink()
        for command in (["export", run.name, "-o", tmp_path / "m.pt"], ["bench", run.name, "--rounds", "1"]):
            one_line_error(*cli(capsys, *command)[::2], "damaged dataset shape record", str(record), "re-run")
        assert cli(capsys, *argv)[0] == 0
        assert json.loads(record.read_text()) == good
    assert cli(capsys, "export", run.name, "-o", tmp_path / "m.pt")[0] == 0


def test_sweep_events_follow_the_umask(tmp_path):
    from jackpot.launch.sweep import log_event
    old = os.umask(0o002)
    try:
        log_event(tmp_path, event="start", run="x")
    finally:
        os.umask(old)
    assert (tmp_path / "events.jsonl").stat().st_mode & 0o777 == 0o664


def test_a_command_refused_as_busy_changes_no_record_and_fewer_levels_keep_the_record(tiny_npz, store, capsys):
    import fcntl
    assert cli(capsys, *small(tiny_npz), "--levels", "2")[0] == 0
    run = run_dir(store, "lottery")
    records = {p.name: p.read_bytes() for p in run.glob("*.json")}
    with open(run / "run.lock", "a+") as held:  # another process computing the run
        fcntl.flock(held, fcntl.LOCK_EX)
        one_line_error(*cli(capsys, *small(tiny_npz), "--levels", "3")[::2], "being computed by another process")
    assert {p.name: p.read_bytes() for p in run.glob("*.json")} == records
    assert json.loads((run / "config.json").read_text())["config"]["lottery"]["levels"] == 2
    status, out, err = cli(capsys, *small(tiny_npz), "--levels", "1")  # fewer levels: shows what is computed
    assert status == 0, err
    assert json.loads((run / "config.json").read_text())["config"]["lottery"]["levels"] == 2
    line = cli(capsys, "ls")[1].splitlines()[-1]
    assert "IMP 2/2 levels" in line and line.endswith("done")


def test_sweep_refuses_an_unfinished_run_begun_under_another_thread_count(tiny_npz, store, capsys):
    argv = small(tiny_npz, "sparse", "--method", "static", "--density", "0.2")
    assert cli(capsys, *argv)[0] == 0
    run = run_dir(store, "sparse")
    status, out, err = cli(capsys, "sweep", *argv, "--threads", "2")  # finished: nothing to compute
    assert status == 0 and "1/1 done" in out, err
    (run / "summary.json").unlink()  # as if killed before the end
    status, out, err = cli(capsys, "sweep", *argv, "--threads", "2")
    one_line_error(status, err, "begun with 1 thread(s)", "--threads 1")
    assert "failed" not in out and not (run / "summary.json").exists()


@pytest.mark.parametrize("argv, words", [(["--levels", "9"], "no level 9"),
                                         (["--rewinds", "9ep"], "is not before the end of training")])
def test_refused_stability_leaves_no_stability_directory(tiny_npz, store, capsys, argv, words):
    assert cli(capsys, *small(tiny_npz, "lottery", "--controls", ""))[0] == 0
    run = run_dir(store, "lottery")
    status, _, err = cli(capsys, "stability", run.name, "--levels", "1", *argv, "--threads", "1", "--device", "cpu")
    one_line_error(status, err, words)
    assert not (run / "stability").exists()


def test_ls_lists_a_damaged_config_and_goes_on_and_refuses_a_store_that_is_a_file(tiny_npz, store, capsys, tmp_path):
    assert cli(capsys, *small(tiny_npz, "pai"))[0] == 0
    assert cli(capsys, *small(tiny_npz, "sparse", "--method", "static"))[0] == 0
    pai, sparse = run_dir(store, "pai"), run_dir(store, "sparse")
    (pai / "config.json").write_text("{}")
    status, out, err = cli(capsys, "ls")
    assert status == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows[pai.name].endswith("damaged (config.json)") and rows[sparse.name].endswith("done")
    file = tmp_path / "file"
    file.write_text("x")
    one_line_error(*cli(capsys, "ls", "--store", file)[::2], f"{file} is a file, not a directory")


def test_lottery_plot_title_of_one_seed_has_no_plus_minus():
    import matplotlib.pyplot as plt
    from jackpot.analysis.lottery_report import figure

    def rows(n):
        return [{"level": level, "density": density,
                 "arms": {"ticket": {"mean": 0.9, "std": 0.01 if n > 1 else 0.0, "n": n, "of": n, "diverged": 0}}}
                for level, density in ((0, 1.0), (1, 0.5))]
    for n, title in ((1, "Lottery tickets: 1 seed"), (3, "Lottery tickets: mean ± std over 3 seeds")):
        fig = figure(rows(n))
        assert fig.axes[0].get_title() == title
        plt.close(fig)
