"""Instability analysis / linear mode connectivity (Frankle et al. 2020).

For a lottery level L (0 = dense) and a rewind step k: take the dense weights at step k (replayed
from initialisation with the run's own data order and LR schedule, so they equal the run's),
apply level L's mask, train two copies from k to T with *different* data orders, and evaluate the
test error along the straight line between them on a grid of alpha. The error barrier is
    max_alpha err(alpha * w_a + (1 - alpha) * w_b) - mean(err(w_a), err(w_b)).
Every floating-point tensor of the state (weights and BatchNorm statistics) is interpolated.
Results land in <run>/stability/level_LL-k<k>/result.json; finished points are not recomputed (another
--alphas grid re-evaluates the path between the saved copies, without training them again).
"""
from __future__ import annotations

import time

import torch

from ..config import derive_seed
from ..errors import JackpotError
from ..sparse import Masks
from ..store import Run, atomic_write_json, check_threads, read_json, safe_torch_load
from ..train import train_stage
from ..train.loop import evaluate
from .context import RunContext
from .registry import procedure


def interpolate(a: dict, b: dict, alpha: float) -> dict:
    return {k: alpha * a[k] + (1 - alpha) * b[k] if a[k].is_floating_point() else a[k] for k in a}


def _test_split(ds):
    test = ds.evaluation_splits()["test"]
    return test if isinstance(test, tuple) else (test, None)


def barrier(model: torch.nn.Module, a: dict, b: dict, x, y, alphas: int, device, precision: str = "fp32",
            channels_last: bool = False, inputs=None) -> dict:
    grid = [i / (alphas - 1) for i in range(alphas)]
    errors, losses = [], []
    for alpha in grid:
        model.load_state_dict(interpolate(a, b, alpha))
        loss, acc = evaluate(model, x, y, device, precision, channels_last, inputs)
        errors.append(1 - acc)
        losses.append(loss)
    return {"alphas": grid, "errors": errors, "losses": losses,
            "barrier_error": max(errors) - (errors[0] + errors[-1]) / 2,
            "barrier_loss": max(losses) - (losses[0] + losses[-1]) / 2}


def run_stability(run: Run, levels: list[int], rewinds: list[str], alphas: int = 11, device="cpu",
                  progress=print) -> list[dict]:
    ctx = RunContext.attach(run, device, progress)
    if not procedure(ctx.cfg.kind).levels:
        raise JackpotError("stability analysis runs on a lottery run (one with pruning levels)")
    if alphas < 2:
        raise JackpotError(f"--alphas must be at least 2, got {alphas}")
    if not ctx.cfg.data.shuffle:  # both copies would see the same batches and end identical
        raise JackpotError(f"run {run.path.name} trains with --no-shuffle: every copy takes the batches in "
                           "the same order, so there is no SGD noise to measure; stability needs a shuffled run")
    total = ctx.total_steps
    # every refusal (a level not computed yet, a rewind too late) before stability/ exists
    masks = {level: _level_masks(ctx, level) for level in levels}
    steps = {text: ctx.steps(text) for text in rewinds}
    for text, k in steps.items():
        if k >= total:
            raise JackpotError(f"rewind {text} ({k} steps) is not before the end of training ({total})")
    if any(not (run.path / "stability" / f"level_{level:02d}-k{k}" / "result.json").exists()
           for level in levels for k in steps.values()):
        check_threads(run.path, device=device)  # the replay to step k must give the run's own weights
    results = []
    with Run(run.path / "stability").lock():
        for level in levels:
            for text in rewinds:
                results.append(_point(ctx, level, masks[level], steps[text], total, alphas))
    return results


def _level_masks(ctx: RunContext, level: int) -> Masks:
    if level == 0:
        model = ctx.new_model(("init",))
        return Masks.ones_for(model, ctx.prunable(model))
    path = ctx.run.stage(f"level_{level:02d}", "mask.pt")
    if not path.exists():
        raise JackpotError(f"run {ctx.run.path.name} has no level {level} yet")
    return Masks.load(path)


def _weights_at(ctx: RunContext, k: int, total: int) -> dict:
    init = safe_torch_load(ctx.run.stage("init.pt"), "initial weights")
    if k == 0:
        return init
    model = ctx.new_model(("init",))
    model.load_state_dict(init)
    full = Masks.ones_for(model, ctx.prunable(model))  # as level 0 trains: same ops, same bits
    rel = f"stability/replay-k{k}"
    train_stage(ctx.stage(rel, model, full, 0, k, ctx.label(f"replay to step {k}"), finding=True,
                          schedule_end=total))
    return safe_torch_load(ctx.run.stage(rel, "final.pt"), "replayed weights")


def _point(ctx: RunContext, level: int, masks: Masks, k: int, total: int, alphas: int) -> dict:
    out = ctx.run.stage("stability", f"level_{level:02d}-k{k}")
    copies = {copy: f"stability/level_{level:02d}-k{k}/{copy}" for copy in ("a", "b")}
    t0 = time.perf_counter()
    if (out / "result.json").exists():
        saved = read_json(out / "result.json", "stability result")
        if len(saved.get("alphas", [])) == alphas:
            return saved
        # another grid: the path between the same two trained copies, evaluated again (cheap)
        ctx.progress(ctx.label(f"level {level} rewind {k}: the barrier at {alphas} points (it was "
                               f"{len(saved.get('alphas', []))}), from the trained copies"))
    else:
        start = _weights_at(ctx, k, total)
        for copy, rel in copies.items():
            model = ctx.new_model(("init",))
            model.load_state_dict(start)
            train_stage(ctx.stage(rel, model, masks, k, total, ctx.label(f"stability copy {copy}"),
                                  order_seed=derive_seed(ctx.cfg.seed, "stability-order", copy)))
    finals = [safe_torch_load(ctx.run.stage(rel, "final.pt"), "trained copy") for rel in copies.values()]
    model = ctx.new_model(("init",)).to(ctx.device)
    result = {"level": level, "rewind_step": k, "density": masks.density(),
              **barrier(model, finals[0], finals[1], *_test_split(ctx.dataset), alphas, ctx.device,
                        ctx.cfg.train.precision, ctx.cfg.train.channels_last, ctx.dataset.inputs)}
    atomic_write_json(out / "result.json", result)
    ctx.progress(ctx.label(f"level {level} ({100 * masks.density():.1f}% weights) rewind {k}: error barrier "
                           f"{100 * result['barrier_error']:.1f} points ({time.perf_counter() - t0:.1f}s)"))
    return result


def format_stability(results: list[dict]) -> str:
    lines = ["| level | weights remaining | rewind step | error at ends (%) | error barrier (points) |",
             "|---|---|---|---|---|"]
    for r in results:
        ends = f"{100 * r['errors'][0]:.1f} / {100 * r['errors'][-1]:.1f}"
        lines.append(f"| {r['level']} | {100 * r['density']:.1f}% | {r['rewind_step']} | {ends} | "
                     f"{100 * r['barrier_error']:.1f} |")
    return "\n".join(lines)
