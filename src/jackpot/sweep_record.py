"""A sweep's record: <store>/sweeps/<kind>-<hash>.json lists its runs (name, hash, grid values,
config), named by the hash of its runs' hashes; <store>/sweeps/<name>/ holds its logs and errors.
Written by `jackpot sweep` (jackpot.launch.sweep), read back by `jackpot report`."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, canonical, from_dict, run_hash, to_dict
from .errors import JackpotError
from .store import atomic_write_json, make_dirs, read_json, store_root


@dataclass
class Sweep:
    """A sweep record and its directory."""

    root: Path
    kind: str
    grid: dict
    runs: list[dict]  # {"name", "hash", "values", "config"}

    @classmethod
    def create(cls, kind: str, points: list[tuple[RunConfig, dict]], grid: dict, root=None) -> "Sweep":
        runs = [{"name": f"{cfg.kind}-{run_hash(cfg)}", "hash": run_hash(cfg), "values": values,
                 "canonical": canonical(cfg), "config": to_dict(cfg)} for cfg, values in points]
        return cls(store_root(root), kind, grid, runs)

    @classmethod
    def load(cls, path: str | Path) -> "Sweep":
        path = Path(path)
        if path.is_dir():
            path = path.with_suffix(".json")
        rec = read_json(path, "sweep record")
        if not isinstance(rec, dict) or "runs" not in rec:
            raise JackpotError(f"{path} is not a sweep record")
        return cls(path.parent.parent, rec["kind"], rec["grid"], rec["runs"])

    @property
    def name(self) -> str:
        text = "\n".join(sorted(r["hash"] for r in self.runs))
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @property
    def record_path(self) -> Path:
        return self.root / "sweeps" / f"{self.name}.json"

    @property
    def dir(self) -> Path:
        return self.root / "sweeps" / self.name

    def write(self) -> Path:
        rec = {"kind": self.kind, "name": self.name, "grid": self.grid, "runs": self.runs}
        if not self.record_path.exists() or read_json(self.record_path) != json.loads(json.dumps(rec)):
            atomic_write_json(self.record_path, rec)
        for sub in ("errors", "logs"):
            make_dirs(self.dir / sub)
        return self.record_path

    def run_paths(self) -> list[Path]:
        return [self.root / r["name"] for r in self.runs]

    def config(self, name: str) -> RunConfig:
        return from_dict(next(r["config"] for r in self.runs if r["name"] == name))
