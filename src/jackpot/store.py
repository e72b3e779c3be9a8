"""The experiment store: run directories named by config hash, atomic writes, locks, listing.

Layout:  <root>/<kind>-<hash>/config.json, env.json, run.lock, and the procedure's stages.
A stage is finished when its `done.json` exists and the files it vouches for are whole; that
file is written last and atomically, so a killed process never leaves a half-written stage that
looks complete, and a stage whose files were lost or damaged since is recomputed (stage_problem).
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy
import torch

from . import __version__
from .config import GROUPS, RunConfig, canonical, from_dict, kind_spec, run_hash, to_dict
from .errors import JackpotError
from .files import (atomic_torch_save, atomic_write_json, atomic_write_text, is_primary,  # noqa: F401
                    make_dirs, read_json, safe_torch_load, writing)  # (the floor's atomic files, offered here too)

DEFAULT_ROOT = "runs"


def store_root(root: str | None = None) -> Path:
    return Path(root or os.environ.get("JACKPOT_STORE") or DEFAULT_ROOT)


def weights_mismatch(model: torch.nn.Module, state) -> str | None:
    """Why `state` cannot be loaded into `model` (names, shapes), or None when it can."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a state dict"
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys()
                   if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or wrong):
        return None
    parts = [f"{len(v)} {what} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
             for what, v in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong)) if v]
    return "does not fit the model: " + "; ".join(parts) + " tensors"


def load_weights(model: torch.nn.Module, path: str | Path, what: str = "trained weights") -> torch.nn.Module:
    """Load a state-dict file into `model`; a file that does not fit it is one clear JackpotError."""
    state = safe_torch_load(path, what)
    problem = weights_mismatch(model, state)
    if problem:
        raise JackpotError(f"{what} {path} {problem}; move it away and re-run to recompute that stage")
    model.load_state_dict(state)
    return model


# --- finished stages ------------------------------------------------------------------------------

STAGE_RECORD_KEYS = ("final", "best", "density")


def stage_problem(stage_dir: str | Path) -> str | None:
    """Why a stage does not count as finished, or None when it does. done.json must be a whole
    record, and the files it vouches for (final.pt, mask.pt for a masked stage) must be there at the
    sizes it recorded: a missing, truncated or replaced file makes the stage unfinished, so a
    re-run recomputes it. Cheap enough for listings: reads done.json, loads no tensor."""
    d = Path(stage_dir)
    if not (d / "done.json").exists():
        return "not finished"
    try:
        rec = json.loads((d / "done.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return "done.json is unreadable"
    if not isinstance(rec, dict) or any(k not in rec for k in STAGE_RECORD_KEYS) or \
            not isinstance(rec["final"], dict) or "test_acc" not in rec["final"]:
        return "done.json is incomplete"
    files = rec.get("files") or {"final.pt": None, **({"mask.pt": None} if rec.get("nnz") is not None else {})}
    if not isinstance(files, dict) or not all(isinstance(name, str) for name in files):
        return "done.json is incomplete"
    for name, size in files.items():
        path = d / name
        if not path.is_file():
            return f"{name} is missing"
        if size is not None and path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when the stage finished"
    return None


def stage_done(stage_dir: str | Path) -> bool:
    return stage_problem(stage_dir) is None


# --- environment and code version ---------------------------------------------------------------

def code_version() -> dict:
    src = Path(__file__).resolve().parent
    info = {"jackpot": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src,
                                   capture_output=True, text=True, timeout=5)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def environment() -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": numpy.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads(),
            "argv": sys.argv}


# --- runs -----------------------------------------------------------------------------------------

class Run:
    """One run directory. Created from a config; re-opening it with the same config resumes it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: RunConfig, root: str | Path | None = None) -> "Run":
        """The run's directory; its config.json is written by record_config, under the lock."""
        path = cls.path_for(cfg, root)
        if is_primary():
            make_dirs(path)
        return cls(path)

    def record_config(self, cfg: RunConfig, device: str | torch.device | None = None) -> None:
        """Write config.json. Call it holding the run's lock, so a command refused as busy changes
        nothing. Same hash, so only unhashed fields (levels, data_root) and settings the run does
        not read (config.READ_WHEN) can differ: keep the latest, but never lower what the kind's
        spec marks `never_lower` (lottery levels: those are computed, and `ls` counts them
        against the record)."""
        if not is_primary():
            return
        path = self.path / "config.json"
        try:
            old = read_json(path, "run config") if path.exists() else None
        except JackpotError:  # unreadable: the command's config (the directory is its hash) rewrites it
            old = None
        for address in kind_spec(cfg.kind).never_lower:
            group, name = address.split(".")
            try:
                recorded = type(getattr(getattr(cfg, group), name))(old["config"][group][name])
            except (TypeError, KeyError, ValueError):
                continue
            if recorded > getattr(getattr(cfg, group), name):
                cfg = dataclasses.replace(cfg, **{group: dataclasses.replace(getattr(cfg, group), **{name: recorded})})
        threads = run_threads(self.path)  # the count the run was begun with (check_threads)
        begun_on = run_device(self.path)  # likewise its device kind
        record = {"hash": run_hash(cfg), "canonical": canonical(cfg), "config": to_dict(cfg),
                  "threads": torch.get_num_threads() if threads is None else threads}
        if begun_on is not None or device is not None:
            record["device"] = begun_on or device_kind(device)
        if old != record:
            atomic_write_json(path, record)

    @staticmethod
    def path_for(cfg: RunConfig, root: str | Path | None = None) -> Path:
        """Where the run of `cfg` lives (whether or not it exists yet)."""
        return store_root(root) / f"{cfg.kind}-{run_hash(cfg)}"

    def _record_environment(self) -> None:
        """Each computing invocation appends its code version and environment (under the lock)."""
        env = {"code": code_version(), "environment": environment()}
        path = self.path / "env.json"
        record = read_json(path, "environment record") if path.exists() else {}
        history = record.get("history", []) if isinstance(record, dict) else []
        atomic_write_json(path, {"history": history + [env]})

    @property
    def hash(self) -> str:
        return self.path.name.rpartition("-")[2]

    def config(self) -> RunConfig:
        path = self.path / "config.json"
        record = read_json(path, "run config")
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise JackpotError(f"damaged run config {path}: it holds no config record")
        cfg = from_dict(record["config"])
        # A key lost from the config would silently take its default: the recorded settings say.
        stored = record.get("canonical") if isinstance(record.get("canonical"), dict) else {}
        differ = [group for group in ("kind", "seed") if group in stored and stored[group] != getattr(cfg, group)]
        missing = object()
        # a recorded value is the config's as given, or as the hash spells it (a canonical
        # spelling, or an entry of the hash's own such as data.label_rule)
        hashed = canonical(cfg, unread=True)
        for group, values in stored.items():
            if group in GROUPS and isinstance(values, dict):
                differ += [f"{group}.{name}" for name, value in values.items()
                           if getattr(getattr(cfg, group), name, missing) != value
                           and hashed.get(group, {}).get(name, missing) != value]
        if differ:
            raise JackpotError(f"damaged run config {path}: {', '.join(differ)} differ from the run's "
                               "recorded settings (restore config.json or move the run away)")
        return cfg

    def stage(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    @contextmanager
    def lock(self, wait: bool | None = None, progress=print):
        """Refuse to compute a run that another live process is computing (rank 0 holds the lock
        for a distributed job); with `wait`, wait for that process to finish or stop instead.
        wait=None: the caller offers no waiting, so the refusal does not suggest --wait."""
        if not is_primary():
            yield self
            return
        make_dirs(self.path)
        with writing(self.path / "run.lock"):
            f = open(self.path / "run.lock", "a+")
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    hint = "" if wait is None else " (--wait waits for it to finish)"
                    raise JackpotError(f"run {self.path} is being computed by another process{hint}") from None
                progress(f"waiting: run {self.path} is being computed by another process")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._record_environment()
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def is_locked(self) -> bool:
        try:  # read-only, and a shared lock: `ls` works on a read-only store
            fd = os.open(self.path / "run.lock", os.O_RDONLY)
        except OSError:  # no lock file (never computed) or unreadable: nobody we can see holds it
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # releases the probe's lock
        return False


def run_threads(path: str | Path) -> int | None:
    """The torch thread count a run (or branch) directory was begun with: its config.json record,
    or for a run recorded before that, its first invocation's env.json entry; None if unknown."""
    path = Path(path)
    for name, pick in (("config.json", lambda r: r.get("threads")),
                       ("env.json", lambda r: r["history"][0]["environment"]["threads"])):
        try:
            value = pick(json.loads((path / name).read_text()))
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def device_kind(device: str | torch.device) -> str:
    """What a run's bits depend on of its device: "cpu", or "cuda" with the GPU's model name
    (two GPU models, like a GPU and a CPU, run different kernels)."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return f"cuda ({torch.cuda.get_device_name(device)})"


def run_device(path: str | Path) -> str | None:
    """The device kind a run (or branch) directory was begun on, from config.json; None if unknown
    (a run recorded before devices were)."""
    try:
        value = json.loads((Path(path) / "config.json").read_text()).get("device")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def check_threads(path: str | Path, threads: int | None = None, device: str | torch.device | None = None) -> None:
    """Refuse to compute more of a run under another torch thread count, or on another kind of
    device, than it was begun with: float reductions split over threads round differently, so 1
    and 2 threads give different weights (and RigL masks), and a GPU runs other kernels than a CPU;
    the resumed part would not continue the computation the first part began. Callers check only
    when something is left to compute: a finished run re-invoked anywhere just shows its results.
    `threads`: the count it would run under (a sweep's workers), default this process's;
    `device`: the device it would run on (None: not checked)."""
    recorded, now = run_threads(path), torch.get_num_threads() if threads is None else threads
    if recorded is not None and recorded != now:
        raise JackpotError(f"{Path(path).name} was begun with {recorded} thread(s) and "
                           f"{'this process has' if threads is None else 'would now run with'} {now}: "
                           f"resume or extend it with --threads {recorded} (results depend on the thread count)")
    begun_on = run_device(path)
    if device is not None and begun_on is not None and begun_on != device_kind(device):
        raise JackpotError(f"{Path(path).name} was begun on {begun_on} and would now run on {device_kind(device)}: "
                           f"resume or extend it on the device it was begun on (results depend on the device)")


def list_runs(root: str | Path | None = None) -> list[Run]:
    base = store_root(root)
    if base.exists() and not base.is_dir():
        raise JackpotError(f"store {base} is a file, not a directory (give the store directory with --store)")
    if not base.is_dir():
        return []
    return sorted((Run(p.parent) for p in base.glob("*/config.json")), key=lambda r: r.path.name)


def find_run(ref: str, root: str | Path | None = None) -> Run:
    """A run by directory path, full name or unique hash prefix."""
    if not ref.strip():  # '' is a prefix of every hash: it would pick a store's only run
        raise JackpotError("give a run: its directory, name or hash prefix (see `jackpot ls`)")
    if Path(ref, "config.json").exists():
        return Run(Path(ref))
    matches = [r for r in list_runs(root) if r.path.name == ref or r.hash.startswith(ref)]
    if not matches:
        raise JackpotError(f"no run {ref!r} in {store_root(root)} (see `jackpot ls`)")
    if len(matches) > 1:
        raise JackpotError(f"{ref!r} matches {len(matches)} runs: "
                           f"{', '.join(r.path.name for r in matches)}; give more of the hash")
    return matches[0]
