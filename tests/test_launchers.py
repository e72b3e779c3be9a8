"""The same sweep on a real local Ray cluster and through submitit's local executor (one job
array); Ray addresses that do not answer are one line and start nothing."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jackpot.cli import main
from jackpot.launch.sweep import read_events

BASE = ["--dataset", "mnist1d", "--duration", "2ep", "--batch-size", "200", "--delta-t", "10",
        "--grid", "sparse.method=rigl,set", "--grid", "density=0.1,0.5"]


def _finished(store):
    sweep_dir = next(p for p in Path(store, "sweeps").iterdir() if p.is_dir())
    return sorted(e["run"] for e in read_events(sweep_dir) if e["event"] == "finish"), sweep_dir


def test_sweep_on_a_local_ray_cluster(store, capsys):
    assert main(["sweep", "sparse", *BASE, "--launcher", "ray", "--workers", "2"]) == 0
    finished, sweep_dir = _finished(store)
    assert len(finished) == 4 and finished == sorted(p.name for p in Path(store).glob("sparse-*"))
    assert len({e["pid"] for e in read_events(sweep_dir)}) >= 2  # Ray worker processes
    assert "4/4 done" in capsys.readouterr().out


def test_sweep_through_submitit_local_executor(store, capsys):
    assert main(["sweep", "sparse", *BASE, "--launcher", "slurm", "--slurm-cluster", "local",
                 "--workers", "2"]) == 0
    assert "no SLURM: submitit's local executor runs the array on this machine, 2 at a time" in capsys.readouterr().out
    finished, sweep_dir = _finished(store)
    assert len(finished) == 4
    # job arrays (map_array calls) of at most --workers tasks: the local executor starts all it gets
    events = read_events(sweep_dir)
    arrays = [e for e in events if e["event"] == "array"]
    assert sum(len(a["job_ids"]) for a in arrays) == 4 and all(len(a["job_ids"]) <= 2 for a in arrays)
    assert all(a["cluster"] == "local" for a in arrays)
    running, most = 0, 0  # never more than --workers runs at once
    for e in sorted((e for e in events if e["event"] in ("start", "finish")), key=lambda e: e["time"]):
        running += 1 if e["event"] == "start" else -1
        most = max(most, running)
    assert most <= 2
    # a second run of the sweep submits nothing: every run is finished
    assert main(["sweep", "sparse", *BASE, "--launcher", "slurm", "--slurm-cluster", "local"]) == 0
    assert len([e for e in read_events(sweep_dir) if e["event"] == "array"]) == len(arrays)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", [f"127.0.0.1:{_free_port()}", "ray://127.0.0.1:1", "nonsense"])
def test_unreachable_ray_address_is_one_line_and_starts_nothing(tmp_path, address):
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "jackpot.cli", "sweep", "sparse", *BASE, "--launcher", "ray",
                           "--ray-address", address, "--store", str(store)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jackpot: error: --ray-address"), proc.stderr
    assert not store.exists()


def test_missing_optional_launcher_is_one_clear_line(store, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    assert main(["sweep", "sparse", *BASE, "--launcher", "slurm"]) == 2
    assert "pip install 'jackpot[slurm]'" in capsys.readouterr().err
    assert not store.exists()
