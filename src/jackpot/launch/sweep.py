"""Sweeps: many independent runs keyed by their config hash, on any launcher.

Correctness lives in the store, not in the sweep: a run whose results exist is skipped, an
interrupted one resumes from its checkpoint, and a run another process is computing (its
`run.lock` is held) is left alone and looked at again until it is finished or free. So a sweep
can be killed and restarted at any time, and two sweeps sharing runs never compute one twice.

Files:
  <store>/sweeps/<kind>-<hash of the sorted run hashes>.json   the record: grid and runs
  <store>/sweeps/<kind>-<hash>/events.jsonl   start/finish/busy/error per attempt (append-only)
  <store>/sweeps/<kind>-<hash>/errors/<run>.txt   traceback of a run that crashed
  <store>/sweeps/<kind>-<hash>/logs/<run>.log     the run's progress lines
  <store>/sweeps/<kind>-<hash>/status.json        last known state of every run
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from collections import deque
from pathlib import Path

import torch

from ..config import RunConfig, from_dict, to_dict
from ..errors import JackpotError
from ..procedures import finished_state, run as run_procedure
from ..store import Run, atomic_write_json, atomic_write_text, make_dirs, store_root, writing
from ..sweep_record import Sweep  # noqa: F401  (the record; launchers and the CLI take it from here too)

BUSY_MESSAGE = "being computed by another process"
FINISHED = ("done", "diverged")


# --- run state ------------------------------------------------------------------------------------


def log_event(sweep_dir: str | Path, **event) -> None:
    """One JSON line, appended in a single write (atomic for lines this short on a local disk)."""
    event = {"time": round(time.time(), 3), "pid": os.getpid(), "host": socket.gethostname(), **event}
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    path = Path(sweep_dir) / "events.jsonl"
    with writing(path):  # a full disk, a read-only store: one line
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # 0666 less the umask, as other files
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read_events(sweep_dir: str | Path) -> list[dict]:
    path = Path(sweep_dir) / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


# --- one job (runs in a worker: a pool process, a Ray task or a SLURM array task) -----------------

def execute(job: dict) -> dict:
    """Run one sweep run to completion. Never raises: the result says done, diverged, busy
    (another process holds the run's lock) or failed (with the traceback).

    job: {"name", "config" (to_dict), "root", "device", "threads", "sweep_dir", "wait_busy"}.
    With wait_busy (SLURM arrays, where a task cannot be handed back) a busy run is waited for.
    """
    name, sweep_dir = job["name"], job["sweep_dir"]
    t0 = time.perf_counter()
    try:
        if job.get("threads"):
            torch.set_num_threads(int(job["threads"]))
        cfg = from_dict(job["config"])
        run = Run(store_root(job["root"]) / name)
        while True:
            state = finished_state(run.path, cfg)
            if state:
                return {"name": name, "status": state, "computed": False, "seconds": 0.0}
            if run.is_locked():
                if not job.get("wait_busy"):
                    log_event(sweep_dir, event="busy", run=name)
                    return {"name": name, "status": "busy"}
                time.sleep(2.0)
                continue
            resumed = run.path.exists() and any(run.path.glob("**/checkpoint.pt"))
            log_event(sweep_dir, event="start", run=name, resumed=resumed)
            try:
                _run_logged(cfg, job, Path(sweep_dir) / "logs" / f"{name}.log")
            except JackpotError as e:
                if BUSY_MESSAGE not in str(e):
                    raise
                log_event(sweep_dir, event="busy", run=name)
                if not job.get("wait_busy"):
                    return {"name": name, "status": "busy"}
                continue
            state = finished_state(run.path, cfg)
            if state is None:
                raise JackpotError(f"run {name} returned without finishing")
            seconds = time.perf_counter() - t0
            log_event(sweep_dir, event="finish", run=name, status=state, seconds=round(seconds, 3))
            return {"name": name, "status": state, "computed": True, "seconds": seconds}
    except BaseException as e:  # noqa: BLE001 - a crash of one run must not end the sweep
        if isinstance(e, KeyboardInterrupt):
            raise
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        try:
            log_event(sweep_dir, event="error", run=name, error=f"{type(e).__name__}: {e}")
        except (OSError, JackpotError):  # the disk that failed the run may fail its event too
            pass
        return {"name": name, "status": "failed", "error": text, "summary": f"{type(e).__name__}: {e}",
                "seconds": time.perf_counter() - t0}


def _started_unfinished(sweep_dir: str | Path) -> set[str]:
    """The runs whose last start/finish event in this sweep is a start (no finish logged)."""
    last: dict[str, str] = {}
    for e in read_events(sweep_dir):
        if e.get("event") in ("start", "finish") and "run" in e:
            last[e["run"]] = e["event"]
    return {name for name, event in last.items() if event == "start"}


def _run_logged(cfg: RunConfig, job: dict, log_path: Path) -> None:
    make_dirs(log_path.parent)
    with writing(log_path):
        log = open(log_path, "a")

    def progress(line: str) -> None:
        with writing(log_path):  # only the log's own writes: the run's failures name their files
            log.write(line + "\n")
            log.flush()
    try:
        run_procedure(cfg, root=job["root"], device=job.get("device") or "cpu", progress=progress)
    finally:
        with writing(log_path):  # closing flushes what a full disk refused
            log.close()


# --- scheduling -----------------------------------------------------------------------------------

class Progress:
    """done / running / failed / remaining with an ETA: one refreshing line on a terminal,
    a line per change (at most every `every` seconds) otherwise."""

    def __init__(self, total: int, stream=None, every: float = 5.0):
        self.total, self.stream, self.every = total, stream or sys.stdout, every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last_text, self.last_time = "", 0.0
        self.finished_here = 0

    def line(self, c: dict) -> str:
        done = c["done"] + c["diverged"]
        remaining = self.total - done - c["failed"]
        elapsed = time.perf_counter() - self.t0
        eta = "?"
        if self.finished_here and remaining:
            eta = _fmt_seconds(elapsed / self.finished_here * remaining)
        elif not remaining:
            eta = "0s"
        extra = f" ({c['diverged']} diverged)" if c["diverged"] else ""
        waiting = f", {c['elsewhere']} running elsewhere" if c["elsewhere"] else ""
        return (f"[sweep] {done}/{self.total} done{extra}, {c['running']} running{waiting}, "
                f"{c['failed']} failed, {remaining} remaining  elapsed {_fmt_seconds(elapsed)}, ETA {eta}")

    def show(self, counts: dict, force: bool = False) -> None:
        text = self.line(counts)
        now = time.perf_counter()
        changed = text.split("  elapsed")[0] != self.last_text.split("  elapsed")[0]
        if self.tty:
            if force or changed or now - self.last_time >= 1.0:
                self.stream.write("\r\033[K" + text + ("\n" if force else ""))
                self.stream.flush()
                self.last_time = now
        elif force or (changed and now - self.last_time >= self.every) or now - self.last_time >= 60:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_time = now
        self.last_text = text


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def run_sweep(sweep: Sweep, launcher, device: str = "cpu", threads: int = 1, retry_failed: bool = False,
              stream=None, poll: float = 0.5) -> dict:
    """Run every unfinished run of `sweep` with `launcher`; returns {run name: state}."""
    sweep.write()
    errors_dir = sweep.dir / "errors"
    state: dict[str, str] = {}
    errors: dict[str, str] = {}
    queue: deque[str] = deque()
    unheard = _started_unfinished(sweep.dir)
    for r in sweep.runs:
        name = r["name"]
        finished = finished_state(sweep.root / name, sweep.config(name))
        err = errors_dir / f"{name}.txt"
        if finished:
            state[name] = finished
            if name in unheard:  # a killed sweep's worker finished it and died before saying so
                log_event(sweep.dir, event="finish", run=name, status=finished, seconds=0.0, recovered=True)
            if err.exists():
                err.unlink()
        elif err.exists() and not retry_failed:
            state[name] = "failed"
            errors[name] = err.read_text().strip().splitlines()[-1] if err.read_text().strip() else "?"
        else:
            state[name] = "pending"
            queue.append(name)

    def job(name: str) -> dict:
        return {"name": name, "config": next(r["config"] for r in sweep.runs if r["name"] == name),
                "root": str(sweep.root), "device": launcher.device_for(device, name), "threads": threads,
                "sweep_dir": str(sweep.dir), "wait_busy": launcher.wait_busy}

    progress = Progress(len(sweep.runs), stream)
    in_flight: set[str] = set()
    elsewhere: dict[str, float] = {}

    def counts() -> dict:
        vals = list(state.values())
        return {"done": vals.count("done"), "diverged": vals.count("diverged"), "failed": vals.count("failed"),
                "running": len(in_flight), "elsewhere": len(elsewhere)}

    def save_status() -> None:
        atomic_write_json(sweep.dir / "status.json", {"runs": state, "errors": errors, "counts": counts()})

    try:
        launcher.start()
        progress.show(counts())
        while queue or in_flight or elsewhere:
            batch = []
            while queue and len(in_flight) + len(batch) < launcher.capacity:
                batch.append(queue.popleft())
            if batch:
                launcher.submit([job(n) for n in batch])
                in_flight.update(batch)
                for n in batch:
                    state[n] = "running"
            for result in launcher.wait(poll):
                name = result["name"]
                in_flight.discard(name)
                status = result["status"]
                if status == "busy":
                    state[name] = "elsewhere"
                    elsewhere[name] = time.perf_counter()
                elif status == "failed":
                    state[name] = "failed"
                    errors[name] = result.get("summary", "")
                    atomic_write_text(errors_dir / f"{name}.txt", result.get("error", "") + "\n")
                else:
                    state[name] = status
                    if result.get("computed"):
                        progress.finished_here += 1
                    err = errors_dir / f"{name}.txt"
                    if err.exists():
                        err.unlink()
                save_status()
            for name, since in list(elsewhere.items()):
                if time.perf_counter() - since < 1.0:
                    continue
                finished = finished_state(sweep.root / name, sweep.config(name))
                if finished:
                    state[name] = finished
                    del elsewhere[name]
                elif not Run(sweep.root / name).is_locked():  # the other process stopped: take it over
                    del elsewhere[name]
                    state[name] = "pending"
                    queue.append(name)
                else:
                    elsewhere[name] = time.perf_counter()
            progress.show(counts())
        launcher.close()
    except BaseException:
        launcher.close(kill=True)
        raise
    finally:
        if sweep.dir.exists():
            save_status()
    progress.show(counts(), force=True)
    return state
