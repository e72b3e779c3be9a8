"""Procedures compose the engine into experiments. Each takes a RunConfig and returns its Run."""
from __future__ import annotations

from pathlib import Path


def runner(kind: str):
    if kind == "lottery":
        from .lottery import run_lottery
        return run_lottery
    if kind == "pai":
        from .pai import run_pai
        return run_pai
    if kind == "sparse":
        from .sparse_training import run_sparse
        return run_sparse
    from ..errors import JackpotError
    raise JackpotError(f"unknown procedure {kind!r}; choose lottery, pai or sparse")


def run(cfg, root=None, device="cpu", progress=print):
    return runner(cfg.kind)(cfg, root=root, device=device, progress=progress)


def run_job(job: tuple) -> Path:
    """Process-pool entry point: job = (cfg, root, device). Returns the run directory."""
    cfg, root, device = job
    return run(cfg, root=root, device=device, progress=lambda line: print(line, flush=True)).path
