"""Procedures compose the engine into experiments. Each module registers one `Procedure`
(see registry.py); importing this package registers them all."""
from __future__ import annotations

import sys
from pathlib import Path

from . import lottery, pai, sparse_training  # noqa: F401  (each registers its procedure)
from ..progress import set_quiet
from .registry import Procedure, finished_state, kinds, procedure, procedures

__all__ = ["Procedure", "finished_state", "kinds", "procedure", "procedures", "run", "run_job"]


def run(cfg, root=None, device="cpu", progress=print, wait=False):
    """wait: when another process is computing the run, wait for it (then finish what is left)."""
    return procedure(cfg.kind).run(cfg, root=root, device=device, progress=progress, wait=wait)


def run_job(job: tuple) -> Path:
    """Process-pool entry point: job = (cfg, root, device, wait, quiet). Returns the run directory."""
    cfg, root, device, wait, quiet = job
    set_quiet(quiet)
    return run(cfg, root=root, device=device, progress=(lambda _line: None) if quiet else _say_whole,
               wait=wait).path


def _say_whole(line: str) -> None:
    # one write per line: workers sharing a terminal never splice their lines together
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
