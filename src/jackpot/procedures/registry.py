"""The procedures by kind: what each one reads and refuses, how it runs, lays out its files and
reads back.

Each procedure module registers one `Procedure` at import; cli, launch, export and analysis ask
`procedure(cfg.kind)` instead of comparing kind strings. A new procedure is one module that
defines its config spec, run/check/layout functions and calls `register`, plus its import in
`procedures/__init__.py`; its command, sweep subcommand, hashing and reports follow.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import KindSpec, RunConfig, register_kind
from ..errors import JackpotError
from ..sparse import Masks
from ..store import stage_problem


@dataclass
class Source:
    """What a branch starts from (a procedure's `branch_source`): the ticket's mask, start weights
    and training span."""

    masks: Masks
    weights: dict
    start: int
    end: int
    fixed_lr: float | None


@dataclass(frozen=True)
class Procedure:
    kind: str
    config: KindSpec         # the config groups it reads, what narrows them, its validation
    help: str                # one line for `jackpot --help`
    description: str         # its command's --help text
    run: Callable            # (cfg, root, device, progress, wait) -> Run
    check: Callable          # (ctx, model) -> anything; refusals made before the run directory exists
    stages: Callable         # cfg -> stage directories (relative) a finished run has
    mask_path: Callable      # (run, level | None) -> Path of a mask (None: the last one)
    trained_stage: Callable  # (run, level | None, arm) -> Path of a trained sparse stage
    label: Callable          # cfg -> how tables and listings name the method
    levels: bool             # results per pruning level (lottery) or one summary per run
    target_density: Callable  # cfg -> the density the run asks for (reports' x axis before measuring)
    family: Callable          # cfg -> the method with its variants stripped: runs of one family
                              # that differ in some setting are labelled by that setting in reports
    summary_file: str | None = "summary.json"  # written last by single-summary procedures
    branch_source: Callable | None = None  # (ctx, level, retrain, arm) -> branches.Source; None: no branches
    inverted_mask: Callable | None = None  # (ctx, level, ticket masks) -> the lowest-scored mask of equal counts


_REGISTRY: dict[str, Procedure] = {}


def register(p: Procedure) -> Procedure:
    if p.kind in _REGISTRY:
        raise ValueError(f"procedure {p.kind!r} registered twice")
    _REGISTRY[p.kind] = p
    register_kind(p.kind, p.config)  # the config floor hashes and validates it from now on
    return p


def procedure(kind: str) -> Procedure:
    p = _REGISTRY.get(kind)
    if p is None:
        raise JackpotError(f"unknown procedure {kind!r}; choose {', '.join(_REGISTRY)}")
    return p


def kinds() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def procedures() -> tuple[Procedure, ...]:
    return tuple(_REGISTRY.values())


def last_level(run_path: Path) -> int | None:
    """The highest pruned level whose mask exists, or None."""
    levels = sorted(Path(run_path).glob("level_*/mask.pt"))
    return int(levels[-1].parent.name[len("level_"):]) if levels else None


def finished_state(path: Path, cfg: RunConfig) -> str | None:
    """'done', 'diverged' (finished, but some stage's training diverged) or None (not finished):
    every stage its procedure lays out is whole, and its summary is written."""
    path = Path(path)
    proc = procedure(cfg.kind)
    if proc.summary_file and not (path / proc.summary_file).exists():
        return None
    diverged = False
    for stage in proc.stages(cfg):
        if stage_problem(path / stage):  # not finished, or its files lost or damaged since
            return None
        try:
            diverged |= bool(json.loads((path / stage / "done.json").read_text()).get("diverged"))
        except (OSError, json.JSONDecodeError):  # removed meanwhile by a recomputing process
            return None
    return "diverged" if diverged else "done"
