"""The command line: listings, ls/show, and bad input as one clear line with a non-zero exit."""
import subprocess
import sys

import pytest

from jackpot.cli import main


def lottery_args(npz, *extra):
    return ["lottery", "--dataset", f"npz:{npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "2ep", "--fraction", "0.5", "--levels", "1", "--threads", "1", "--device", "cpu", *extra]


def run_cli(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_models_and_datasets_listings(capsys):
    status, out, _ = run_cli(capsys, "models")
    assert status == 0
    for name in ("lenet-300-100", "lenet-5", "mnist1d-mlp", "mnist1d-cnn", "conv-2", "conv-4", "conv-6",
                 "vgg-19", "resnet-20", "resnet-32", "wrn-22-2", "resnet-50"):
        assert f"\n{name} " in "\n" + out
    status, out, _ = run_cli(capsys, "datasets")
    for name in ("mnist1d", "digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "npz:PATH"):
        assert name in out


def test_lottery_then_ls_and_show(tiny_npz, store, capsys):
    status, out, _ = run_cli(capsys, *lottery_args(tiny_npz))
    assert status == 0 and "| 1 | 50.0% |" in out
    assert (store / "reports").is_dir() and list(store.glob("reports/*/accuracy_vs_weights.png"))
    status, out, _ = run_cli(capsys, "ls")
    assert status == 0 and "lenet-300-100" in out and "done" in out
    run_name = next(p.name for p in store.iterdir() if p.name.startswith("lottery-"))
    status, out, _ = run_cli(capsys, "show", run_name.split("-")[1][:6])
    assert status == 0 and "| 1 | 50.0% |" in out
    # a finished command does nothing and says where the results are
    status, out, _ = run_cli(capsys, *lottery_args(tiny_npz))
    assert "test acc" not in out and f"done: {store / run_name}" in out


@pytest.mark.parametrize("args, message", [
    (["--model", "lenet-9000"], "unknown model"),
    (["--dataset", "imagenet-21k"], "unknown dataset"),
    (["--fraction", "1.5"], "--fraction must be in [0, 1)"),
    (["--model", "lenet-5"], "lenet-5"),  # a 2-D conv net cannot take 20 flat features
    (["--dataset", "mnist", "--data-root", "/nonexistent/data"], "jackpot data fetch"),
    (["--rewind", "5ep"], "--rewind"),
    (["--layer-fractions", "fc9=0.1"], "fc9"),
    (["--seeds", "1,x"], "--seeds"),
    (["--seeds", ","], "--seeds"),
    (["--lr", "nan"], "--lr"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--momentum", "1.5"], "--momentum"),
    (["--threads", "-1"], "--threads"),
    (["--workers", "0"], "--workers"),
    (["--device", "foo"], "--device"),
    (["--fraction", "abc"], "invalid float"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--duration", "0ep"], "zero steps"),
])
def test_bad_input_is_one_clear_line(tiny_npz, store, capsys, args, message):
    if message in ("invalid float", "invalid choice"):  # argparse exits itself: still one line, exit 2
        with pytest.raises(SystemExit) as exited:
            run_cli(capsys, *lottery_args(tiny_npz), *args)
        status, err = exited.value.code, capsys.readouterr().err
    else:
        status, _, err = run_cli(capsys, *lottery_args(tiny_npz), *args)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("jackpot: error:")
    assert message.lower() in err.lower()
    assert not store.exists() or not list(store.glob("lottery-*"))  # nothing half-made is left


def test_unknown_run_and_corrupt_checkpoint(tiny_npz, store, capsys):
    status, _, err = run_cli(capsys, "show", "deadbeef")
    assert status == 2 and "no run" in err
    run_cli(capsys, *lottery_args(tiny_npz, "--levels", "0"))
    run = next(p for p in store.iterdir() if p.name.startswith("lottery-"))
    # A stage killed mid-write: checkpoint garbled, no done.json. It must not count as complete.
    stage = run / "level_01" / "ticket"
    stage.mkdir(parents=True)
    (stage / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    (run / "level_01" / ".mask.pt.123.tmp").write_bytes(b"half a file")
    status, _, err = run_cli(capsys, *lottery_args(tiny_npz))
    assert status == 2 and "corrupt checkpoint" in err and "checkpoint.pt" in err
    assert not (stage / "done.json").exists()
    (stage / "checkpoint.pt").unlink()
    status, out, _ = run_cli(capsys, *lottery_args(tiny_npz))
    assert status == 0 and (stage / "done.json").exists()


def test_no_traceback_from_the_real_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jackpot.cli", "lottery", "--model", "nope", "--store",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("jackpot: error: unknown model")
