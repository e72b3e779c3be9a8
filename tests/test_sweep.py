"""`jackpot sweep`: grid expansion and validation, a 2 x 2 x 2 sweep on 2 workers, kill and
restart, concurrent sweeps sharing runs, diverged and crashing runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jackpot.cli import main
from jackpot.config import RunConfig, TrainConfig
from jackpot.errors import JackpotError
from jackpot.launch.grid import expand, parse_grid, resolve_field
from jackpot.launch.sweep import read_events

BASE = ["--dataset", "mnist1d", "--duration", "4ep", "--batch-size", "200", "--delta-t", "10"]
GRID = ["--grid", "sparse.method=rigl,set", "--grid", "density=0.1,0.5", "--grid", "seed=0,1"]


def sweep_cmd(store, *extra):
    return ["sweep", "sparse", *BASE, *GRID, "--workers", "2", "--store", str(store), *extra]


def cli(args):
    return [sys.executable, "-m", "jackpot.cli", *args]


def all_events(store):
    return [e for d in Path(store, "sweeps").iterdir() if d.is_dir() for e in read_events(d)]


def run_dirs(store):
    return sorted(p.name for p in Path(store).glob("sparse-*")) if Path(store).exists() else []


# --- grid ------------------------------------------------------------------------------------------

def test_grid_fields_resolve_by_kind():
    assert resolve_field("method", "sparse")[0] == "sparse"
    assert resolve_field("density", "sparse")[0] == "sparse"
    assert resolve_field("density", "pai")[0] == "pai"
    assert resolve_field("seed", "lottery") == (None, None)
    grid = parse_grid(["train.lr=0.1,0.01", "seed=0,1,2", "keep-first=true,false",
                       "milestones=1ep,2ep;3ep"], "sparse")
    assert grid == {"train.lr": [0.1, 0.01], "seed": [0, 1, 2], "masks.keep_first": [True, False],
                    "train.milestones": ["1ep,2ep", "3ep"]}
    step = RunConfig(kind="sparse", train=TrainConfig(schedule="step"))  # milestones are read by the step schedule
    points = expand(step, grid)
    assert len(points) == 2 * 3 * 2 * 2 and len({p[0] for p in points}) == 24
    assert len(expand(RunConfig(kind="sparse"), grid)) == 2 * 3 * 2  # constant LR: milestones change nothing


def test_dense_baseline_is_one_run_per_seed():
    grid = parse_grid(["method=dense,rigl", "density=0.1,0.5", "seed=0,1"], "sparse")
    points = expand(RunConfig(kind="sparse"), grid)
    assert sum(c.sparse.method == "dense" for c, _ in points) == 2 and len(points) == 6


@pytest.mark.parametrize("spec, kind, message", [
    ("sparse.method=", "sparse", "empty value"),
    ("sparse.method=rigl,,set", "sparse", "empty value"),
    ("sparse.nope=1", "sparse", "unknown field 'sparse.nope'"),
    ("bogus=1", "sparse", "unknown field 'bogus'"),
    ("pai.score=snip", "sparse", "does not apply"),
    ("density=0.1", "lottery", "unknown field 'density'"),
    ("train.lr=fast", "sparse", "bad value 'fast'"),
    ("train.optimizer=lion", "sparse", "choose sgd, adam, adamw"),
    ("seed=0,0", "sparse", "listed twice"),
    ("nofield", "sparse", "write FIELD=v1,v2"),
])
def test_grid_errors(spec, kind, message):
    with pytest.raises(JackpotError, match=message):
        parse_grid([spec], kind)


def test_grid_values_are_validated_before_anything_runs():
    with pytest.raises(JackpotError, match=r"--density must be in \(0, 1\].*grid point sparse.density=1.5"):
        expand(RunConfig(kind="sparse"), parse_grid(["density=0.1,1.5"], "sparse"))


@pytest.mark.parametrize("grid", [["--grid", "sparse.method="], ["--grid", "no.such=1"],
                                  ["--grid", "density=0.1,2"], ["--grid", "method=rigl,bogus"],
                                  ["--dataset", "nope", "--grid", "seed=0,1"]])
def test_bad_sweep_input_is_one_line_and_starts_nothing(tmp_path, grid):
    store = tmp_path / "store"
    proc = subprocess.run(cli(["sweep", "sparse", "--duration", "1it", *grid, "--store", str(store)]),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jackpot: error: "), proc.stderr
    assert not store.exists()


# --- running ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 2 methods x 2 densities x 2 seeds sweep, uninterrupted, and its report table."""
    store = tmp_path_factory.mktemp("ref") / "store"
    t0 = time.perf_counter()
    assert main(sweep_cmd(store)) == 0
    seconds = time.perf_counter() - t0
    assert main(["report", str(store), "-o", str(store.parent / "report")]) == 0
    return store, (store.parent / "report" / "results.csv").read_text(), seconds


def test_sweep_runs_grid_on_two_workers(reference, capsys):
    store, table, _ = reference
    assert len(run_dirs(store)) == 8
    record = next(Path(store, "sweeps").glob("sparse-*.json"))
    rec = json.loads(record.read_text())
    assert len(rec["runs"]) == 8 and set(rec["grid"]) == {"sparse.method", "sparse.density", "seed"}
    events = all_events(store)
    assert sorted(e["run"] for e in events if e["event"] == "finish") == run_dirs(store)
    assert len({e["pid"] for e in events}) == 2  # two worker processes
    assert len(table.strip().splitlines()) == 1 + 4  # header + 2 methods x 2 densities
    # a second sweep skips everything: nothing starts
    mtimes = {p: p.stat().st_mtime_ns for p in Path(store).glob("sparse-*/train/done.json")}
    assert main(sweep_cmd(store)) == 0
    assert len(all_events(store)) == len(events)
    assert {p: p.stat().st_mtime_ns for p in Path(store).glob("sparse-*/train/done.json")} == mtimes
    assert "8/8 done" in capsys.readouterr().out


def _wait_for_finishes(store, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        sweeps = Path(store, "sweeps")
        done = len([e for e in all_events(store) if e["event"] == "finish"]) if sweeps.exists() else 0
        if done >= n or proc.poll() is not None:
            return done
        time.sleep(0.05)
    raise AssertionError("sweep made no progress")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_killed_twice_and_restarted_gives_same_table_and_trains_no_run_twice(reference, tmp_path):
    store = tmp_path / "store"
    for sig, after in [(signal.SIGKILL, 2), (signal.SIGTERM, 5)]:
        proc = subprocess.Popen(cli(sweep_cmd(store)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_finishes(store, after, proc)
        assert proc.poll() is None, "the sweep finished before it could be killed; make the runs longer"
        workers = {e["pid"] for e in all_events(store)}
        proc.send_signal(sig)
        proc.wait(timeout=30)
        time.sleep(1.0)
        assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the sweep"
    killed = [e for e in all_events(store) if e["event"] == "finish"]
    assert 5 <= len(killed) < 8
    assert main(sweep_cmd(store)) == 0
    events = all_events(store)
    finishes = [e["run"] for e in events if e["event"] == "finish"]
    assert sorted(finishes) == run_dirs(store) and len(run_dirs(store)) == 8  # each run finished once
    resumed = [e for e in events if e["event"] == "start" and e["resumed"]]
    # every run's history is one uninterrupted sequence of evaluations
    for metrics in Path(store).glob("sparse-*/train/metrics.jsonl"):
        steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[0] == 0
    assert main(["report", str(store), "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "results.csv").read_text() == reference[1]
    print(f"{len(resumed)} runs resumed from a checkpoint")


def test_two_concurrent_sweeps_compute_each_shared_run_once(tmp_path):
    store = tmp_path / "store"
    a = ["--grid", "sparse.method=rigl,set", "--grid", "density=0.1,0.5"]
    b = ["--grid", "sparse.method=set,static", "--grid", "density=0.1,0.5"]
    procs = [subprocess.Popen(cli(["sweep", "sparse", *BASE, "--duration", "2ep", *g, "--workers", "2",
                                   "--store", str(store)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for g in (a, b)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("4/4 done" in o[0] for o in outs)
    finishes = [e["run"] for e in all_events(store) if e["event"] == "finish"]
    assert sorted(finishes) == run_dirs(store) and len(finishes) == 6  # 2 shared runs, computed once


def test_diverged_run_is_recorded_and_the_sweep_goes_on(store, capsys):
    args = ["sweep", "sparse", *BASE, "--duration", "2ep", "--optimizer", "sgd", "--grid", "train.lr=1e6,0.05",
            "--grid", "method=static"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2/2 done (1 diverged)" in out and "diverged (1)" in out
    status = json.loads(next(Path(store, "sweeps").glob("*/status.json")).read_text())
    assert sorted(status["runs"].values()) == ["diverged", "done"]


def test_crashed_run_is_reported_and_retried_on_request(store, capsys):
    # what the config foresees is refused before launching (test_robustness.py); a run crashes on
    # what it cannot foresee: here a garbled checkpoint it would resume from
    args = ["sweep", "sparse", *BASE, "--duration", "40it", "--grid", "sparse.delta_t=10,20"]
    assert main([*args, "--dry-run"]) == 0
    record = json.loads(next(Path(store, "sweeps").glob("*.json")).read_text())
    victim = Path(store, record["runs"][1]["name"], "train")
    victim.mkdir(parents=True)
    (victim / "checkpoint.pt").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "failed (1)" in out and "--retry-failed" in out
    sweep_dir = next(p for p in Path(store, "sweeps").iterdir() if p.is_dir())
    errors = list((sweep_dir / "errors").glob("*.txt"))
    assert len(errors) == 1 and "corrupt checkpoint" in errors[0].read_text()
    starts = len([e for e in read_events(sweep_dir) if e["event"] == "start"])
    assert main(args) == 1  # failed runs are skipped...
    assert len([e for e in read_events(sweep_dir) if e["event"] == "start"]) == starts
    assert main([*args, "--retry-failed"]) == 1  # ...unless asked to retry
    assert len([e for e in read_events(sweep_dir) if e["event"] == "start"]) == starts + 1


def test_a_run_finished_by_a_killed_worker_gets_its_finish_event_on_restart(tmp_path):
    """A worker killed after its run's results were written but before it logged "finish": the
    restarted sweep trains nothing and logs that finish once (recovered), so the event log again
    holds one finish per run."""
    store = tmp_path / "store"
    assert main(sweep_cmd(store)) == 0
    sweep_dir = next(d for d in Path(store, "sweeps").iterdir() if d.is_dir())
    lines = (sweep_dir / "events.jsonl").read_text().splitlines()
    lost = next(json.loads(l)["run"] for l in lines if json.loads(l)["event"] == "finish")
    kept = [l for l in lines if not (json.loads(l)["event"] == "finish" and json.loads(l)["run"] == lost)]
    (sweep_dir / "events.jsonl").write_text("\n".join(kept) + "\n")
    assert main(sweep_cmd(store)) == 0
    assert main(sweep_cmd(store)) == 0  # once: the second restart finds the log complete
    events = read_events(sweep_dir)
    finishes = [e for e in events if e["event"] == "finish"]
    assert sorted(e["run"] for e in finishes) == run_dirs(store)
    recovered = [e for e in finishes if e.get("recovered")]
    assert [e["run"] for e in recovered] == [lost]
    assert len([e for e in events if e["event"] == "start"]) == len(run_dirs(store))  # nothing trained again
