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


def checker(kind: str):
    """The procedure's `check(ctx, model)`: the refusals its config allows without computing (a
    sweep's preflight runs it on every run before launching any)."""
    if kind == "lottery":
        from .lottery import _check
        return _check
    if kind == "pai":
        from .pai import check_budget
        return check_budget
    if kind == "sparse":
        from .sparse_training import check
        return check
    return runner(kind)  # raises the unknown-procedure error


def run(cfg, root=None, device="cpu", progress=print, wait=False):
    """wait: when another process is computing the run, wait for it (then finish what is left)."""
    return runner(cfg.kind)(cfg, root=root, device=device, progress=progress, wait=wait)


def run_job(job: tuple) -> Path:
    """Process-pool entry point: job = (cfg, root, device[, wait]). Returns the run directory."""
    cfg, root, device, *wait = job
    return run(cfg, root=root, device=device, progress=lambda line: print(line, flush=True),
               wait=bool(wait and wait[0])).path
