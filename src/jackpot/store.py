"""The experiment store: run directories named by config hash, atomic writes, locks, listing.

Layout:  <root>/<kind>-<hash>/config.json, env.json, run.lock, and the procedure's stages.
A stage is finished exactly when its `done.json` exists; that file is written last and
atomically, so a killed process never leaves a half-written stage that looks complete.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from . import __version__
from .config import RunConfig, canonical, from_dict, run_hash, to_dict
from .errors import JackpotError

DEFAULT_ROOT = "runs"


def store_root(root: str | None = None) -> Path:
    return Path(root or os.environ.get("JACKPOT_STORE") or DEFAULT_ROOT)


# --- atomic files --------------------------------------------------------------------------------

def is_primary() -> bool:
    """False on every rank but 0 of a torch.distributed job: only rank 0 writes to the store."""
    import torch.distributed as dist
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@contextmanager
def _atomic_path(path: str | Path):
    """Yield a temporary path in the same directory; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    if not is_primary():
        return
    with _atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj, path: str | Path) -> None:
    if not is_primary():
        return
    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


def safe_torch_load(path: str | Path, what: str = "checkpoint"):
    """torch.load with weights_only=True; a missing or corrupt file is one clear JackpotError."""
    path = Path(path)
    if not path.exists():
        raise JackpotError(f"missing {what}: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/garbled files
        raise JackpotError(f"corrupt {what} {path} ({type(e).__name__}); move it away and re-run "
                           f"to recompute that stage") from None


def read_json(path: str | Path, what: str = "file"):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise JackpotError(f"missing {what}: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JackpotError(f"corrupt {what}: {path}") from None


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
    import numpy
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
        path = store_root(root) / f"{cfg.kind}-{run_hash(cfg)}"
        run = cls(path)
        if not is_primary():
            return run
        path.mkdir(parents=True, exist_ok=True)
        record = {"hash": run_hash(cfg), "canonical": canonical(cfg), "config": to_dict(cfg)}
        # Same hash, so only unhashed fields (levels, data_root) can differ: keep the latest.
        if not (path / "config.json").exists() or read_json(path / "config.json") != record:
            atomic_write_json(path / "config.json", record)
        return run

    def _record_environment(self) -> None:
        """Each computing invocation appends its code version and environment (under the lock)."""
        env = {"code": code_version(), "environment": environment()}
        path = self.path / "env.json"
        history = read_json(path, "environment record")["history"] if path.exists() else []
        atomic_write_json(path, {"history": history + [env]})

    @property
    def hash(self) -> str:
        return self.path.name.rpartition("-")[2]

    def config(self) -> RunConfig:
        return from_dict(read_json(self.path / "config.json", "run config")["config"])

    def stage(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    @contextmanager
    def lock(self):
        """Refuse to compute a run that another live process is computing (rank 0 holds the lock
        for a distributed job)."""
        import fcntl
        if not is_primary():
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "run.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JackpotError(f"run {self.path} is being computed by another process") from None
            try:
                self._record_environment()
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def is_locked(self) -> bool:
        import fcntl
        lock = self.path / "run.lock"
        if not lock.exists():
            return False
        with open(lock, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False


def list_runs(root: str | Path | None = None) -> list[Run]:
    base = store_root(root)
    if not base.is_dir():
        return []
    return sorted((Run(p.parent) for p in base.glob("*/config.json")), key=lambda r: r.path.name)


def find_run(ref: str, root: str | Path | None = None) -> Run:
    """A run by directory path, full name or unique hash prefix."""
    if Path(ref, "config.json").exists():
        return Run(Path(ref))
    matches = [r for r in list_runs(root) if r.path.name == ref or r.hash.startswith(ref)]
    if not matches:
        raise JackpotError(f"no run {ref!r} in {store_root(root)} (see `jackpot ls`)")
    if len(matches) > 1:
        raise JackpotError(f"{ref!r} matches {len(matches)} runs: "
                           f"{', '.join(r.path.name for r in matches)}; give more of the hash")
    return matches[0]
