"""Invariant 6: a lottery run killed mid-level (SIGKILL, no clean-up) and started again with the
same command ends bit-identical to an uninterrupted run, and finished stages are not redone."""
import json
import signal
import subprocess
import sys
import time

import torch


def command(npz, store):
    return [sys.executable, "-m", "jackpot.cli", "lottery", "--dataset", f"npz:{npz}", "--model",
            "lenet-300-100", "--batch-size", "20", "--duration", "8ep", "--fraction", "0.5", "--levels", "2",
            "--controls", "random", "--threads", "1", "--device", "cpu", "--store", str(store)]


def final_weights(store):
    (run,) = [p for p in store.iterdir() if p.name.startswith("lottery-")]
    return {stage: torch.load(run / stage / "final.pt", weights_only=True)
            for stage in ("level_00/ticket", "level_01/ticket", "level_01/random", "level_02/ticket")}, run


def wait_for(path, lines, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and path.read_text().count("\n") >= lines:
            return
        assert proc.poll() is None, "run finished before it could be killed"
        time.sleep(0.005)
    raise AssertionError(f"{path} never reached {lines} lines")


def test_killed_run_resumes_bit_identical(tiny_npz, tmp_path):
    clean = tmp_path / "clean"
    subprocess.run(command(tiny_npz, clean), check=True, capture_output=True)
    reference, _ = final_weights(clean)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(tiny_npz, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill in the middle of level 1's ticket: after its 3rd epoch (a checkpoint exists), before the end.
    metrics = next_run_dir(killed, proc) / "level_01" / "ticket" / "metrics.jsonl"
    wait_for(metrics, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = next_run_dir(killed, None)
    assert not (run / "level_01/ticket/done.json").exists()
    assert (run / "level_01/ticket/checkpoint.pt").exists()  # it will resume mid-level
    level0 = (run / "level_00/ticket/done.json").stat().st_mtime_ns

    out = subprocess.run(command(tiny_npz, killed), check=True, capture_output=True, text=True)
    assert "level 0/2" not in out.stdout  # finished stages are skipped, never redone
    assert (run / "level_00/ticket/done.json").stat().st_mtime_ns == level0
    resumed, _ = final_weights(killed)
    for stage, weights in reference.items():
        assert all(torch.equal(weights[k], resumed[stage][k]) for k in weights), stage
    clean_metrics = [json.loads(l) for l in (final_weights(clean)[1] / "level_01/ticket/metrics.jsonl").read_text().splitlines()]
    resumed_metrics = [json.loads(l) for l in (run / "level_01/ticket/metrics.jsonl").read_text().splitlines()]
    assert [m["test_acc"] for m in clean_metrics] == [m["test_acc"] for m in resumed_metrics]


def next_run_dir(store, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        runs = [p for p in store.iterdir() if p.name.startswith("lottery-")] if store.exists() else []
        if runs:
            return runs[0]
        assert proc is None or proc.poll() is None
        time.sleep(0.01)
    raise AssertionError("no run directory appeared")
