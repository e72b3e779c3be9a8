"""Issue 15: live logging while training (train/live_log.py). TensorBoard event files are written
during training and read back here equal to metrics.jsonl; W&B offline is driven through a
stand-in module that records every call (the real package is an optional extra)."""
import json
import sys
import types
from pathlib import Path

import pytest

from jackpot.cli import main

BASE = ["sparse", "--method", "rigl", "--density", "0.2", "--delta-t", "3", "--batch-size", "40", "--duration", "2ep",
        "--model", "lenet-300-100", "--threads", "1", "--device", "cpu"]


def _run(tiny_npz, store, *extra):
    assert main([*BASE, "--dataset", f"npz:{tiny_npz}", "--store", str(store), *extra]) == 0
    (run,) = Path(store).glob("sparse-*")
    return run


def test_tensorboard_events_equal_the_metrics_file(tiny_npz, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = _run(tiny_npz, tmp_path / "store", "--log", "tensorboard")
    stage = run / "train"
    metrics = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(stage / "tensorboard")).Reload()
    for key in ("test_acc", "test_loss", "lr", "train_loss"):
        logged = {e.step: e.value for e in events.Scalars(key)}
        expected = {m["step"]: m[key] for m in metrics if key in m}
        assert logged.keys() == expected.keys(), key
        assert all(logged[s] == pytest.approx(v, rel=1e-6) for s, v in expected.items()), key
    tags = events.Tags()["scalars"]
    assert {"density/fc1.weight", "step_seconds"} <= set(tags)
    assert any(t.startswith("mask_update/") for t in tags)  # RigL's drop/grow counts as they happen
    hparams = [p for p in (stage / "tensorboard").rglob("events.*") if "hparams" in str(p.parent)]
    assert hparams  # the run's settings, once, with its final metrics
    # the log setting does not change what is computed: the same run as without it
    assert _run(tiny_npz, tmp_path / "plain").name == run.name


def test_wandb_offline_gets_config_once_and_every_record(tiny_npz, tmp_path, monkeypatch):
    calls = {"init": [], "log": [], "finish": 0}

    class FakeRun:
        summary = {}

        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finish"] += 1

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = _run(tiny_npz, tmp_path / "store", "--log", "wandb")
    (init,) = calls["init"]
    assert init["mode"] == "offline" and init["config"]["sparse.method"] == "rigl" and init["dir"] == str(run / "train")
    metrics = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in calls["log"]] == [m["step"] for m in metrics]
    assert [v["test_acc"] for _, v in calls["log"]] == pytest.approx([m["test_acc"] for m in metrics])
    assert calls["finish"] == 1


def test_a_missing_logger_package_is_one_line_before_anything_is_written(tiny_npz, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    store = tmp_path / "store"
    assert main([*BASE, "--dataset", f"npz:{tiny_npz}", "--store", str(store), "--log", "wandb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--log wandb needs the wandb package" in err
    assert not store.exists()
    assert main([*BASE, "--dataset", f"npz:{tiny_npz}", "--store", str(store), "--log", "mlflow"]) == 2
    assert "unknown --log sink(s) mlflow" in capsys.readouterr().err


def _pty_run(argv, cwd):
    """Run a command with its stdout on a pseudo-terminal; returns what the terminal received."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.STDOUT, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_progress_bar_a_pipe_plain_lines_and_quiet_nothing(tiny_npz, tmp_path):
    import subprocess
    argv = [sys.executable, "-m", "jackpot.cli", *BASE, "--dataset", f"npz:{tiny_npz}", "--duration", "10ep"]
    status, screen = _pty_run(argv + ["--store", str(tmp_path / "a")], tmp_path)
    assert status == 0, screen
    assert "step/s" in screen or "it/s" in screen or "s/step" in screen  # tqdm's rate: a live bar
    assert "\r" in screen and "/60" in screen  # redrawn in place; 240 examples / 40 x 10 epochs
    piped = subprocess.run(argv + ["--store", str(tmp_path / "b")], capture_output=True, text=True, cwd=tmp_path)
    assert piped.returncode == 0 and "\r" not in piped.stdout and "test acc" in piped.stdout
    quiet = subprocess.run(argv + ["--store", str(tmp_path / "c"), "--quiet"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert quiet.returncode == 0 and "[seed 0]" not in quiet.stdout and "| rigl" in quiet.stdout


def test_a_resumed_run_keeps_every_logged_point_once_and_a_sink_named_twice_logs_once(tiny_npz, tmp_path, monkeypatch,
                                                                                        interrupt_at):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = [*BASE, "--dataset", f"npz:{tiny_npz}", "--duration", "4ep", "--log", "tensorboard,tensorboard"]
    interrupt_at(14)  # after the checkpoint at step 12 (the end of epoch 2)
    assert main([*argv, "--store", str(tmp_path / "s")]) == 130
    monkeypatch.undo()
    assert main([*argv, "--store", str(tmp_path / "s")]) == 0
    (run,) = (tmp_path / "s").glob("sparse-*")
    metrics = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [e.step for e in EventAccumulator(str(run / "train" / "tensorboard")).Reload().Scalars("test_acc")]
    assert steps == [m["step"] for m in metrics] == [0, 6, 12, 18, 24]


def test_quiet_branch_and_stability_print_only_their_results(tiny_npz, tmp_path, capsys):
    store = tmp_path / "store"
    base = ["--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40", "--duration", "2ep",
            "--threads", "1", "--device", "cpu", "--store", str(store)]
    assert main(["lottery", *base, "--fraction", "0.5", "--levels", "1", "--quiet"]) == 0
    (run,) = store.glob("lottery-*")
    capsys.readouterr()
    assert main(["branch", run.name, "reinit", "--level", "1", "--threads", "1", "--device", "cpu",
                 "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[seed 0]" not in out and out.startswith("branch reinit of")
    assert main(["stability", run.name, "--levels", "1", "--rewinds", "0it", "--alphas", "3", "--threads", "1",
                 "--device", "cpu", "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[seed 0]" not in out and "barrier" in out.lower()
