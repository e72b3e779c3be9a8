"""Sparse training from scratch (RigL, SET, SNFS, DSR, static), gradual magnitude pruning, and the
fair baselines (dense, small-dense), with FLOPs accounting in every run's summary.

Run directory: init.pt, mask_init.pt (the initial mask), train/ (metrics, final weights, final
mask, done.json) and summary.json (accuracy, FLOPs and model size vs dense).
`--extend N` trains N times longer; the LR milestones, warm-up and the mask-update end T_end
scale with it (RigL's 2x/5x runs).
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..config import RunConfig, split_list
from ..errors import JackpotError
from ..flops import inference_flops, layer_flops, model_size_bits, training_flops
from ..sparse import Masks, keep_count
from ..sparse.dst import METHODS as DST_METHODS, UpdateSchedule, make_method
from ..sparse.gmp import GradualMagnitude
from ..store import Run, atomic_write_json
from ..train import train_stage
from .context import RunContext, report_stage

METHODS = ("dense", "small-dense", "gmp", *DST_METHODS)


def extended_train(ctx: RunContext) -> tuple:
    """(train config with every schedule anchor scaled by --extend, total steps)."""
    factor = ctx.cfg.sparse.extend
    if factor <= 0:
        raise JackpotError(f"--extend must be positive, got {factor}")
    t = ctx.cfg.train
    scale = lambda s: f"{round(ctx.steps(s) * factor)}it"
    total = round(ctx.total_steps * factor)
    return replace(t, duration=f"{total}it", warmup=scale(t.warmup),
                   milestones=",".join(scale(m) for m in split_list(t.milestones))), total


def initial_masks(ctx: RunContext, model: torch.nn.Module) -> Masks:
    """Per-layer densities from --distribution, positions uniformly at random (seeded)."""
    from ..sparse.distributions import random_masks
    s = ctx.cfg.sparse
    names = ctx.prunable(model)
    densities = ctx.layer_densities(s.distribution, model, names, s.density)
    return random_masks(model, names, densities, ctx.generator("initial-mask"))


def run_sparse(cfg: RunConfig, root=None, device="cpu", progress=print, dataset=None) -> Run:
    s = cfg.sparse
    ctx = RunContext.open(cfg, root, device, progress, dataset)
    train_cfg, total = extended_train(ctx)
    ctx.cfg = replace(ctx.cfg, train=train_cfg)
    with ctx.run.lock():
        width = _small_dense_width(ctx) if s.method == "small-dense" else 1.0
        model = ctx.new_model(("init",), width=width)
        ctx.save_once(model.state_dict(), "init.pt")
        masks, callbacks = None, []
        if s.method not in ("dense", "small-dense"):
            masks = Masks.ones_for(model, ctx.prunable(model)) if s.method == "gmp" else initial_masks(ctx, model)
            ctx.save_once(dict(masks), "mask_init.pt")
            callbacks = [_callback(ctx, total)]
        label = ctx.label(f"{s.method} density {s.density:g}")
        t0 = time.perf_counter()
        record = train_stage(ctx.stage("train", model, masks, 0, total, label, callbacks=callbacks))
        report_stage(ctx, label, record, time.perf_counter() - t0)
        summary = _summary(ctx, model, total, width)
        atomic_write_json(ctx.run.stage("summary.json"), {**summary, "final": record["final"],
                                                          "best": record["best"]})
        progress(f"done: {ctx.run.path}")
    return ctx.run


def _callback(ctx: RunContext, total: int):
    s = ctx.cfg.sparse
    t_end = int(s.t_end * total)
    if s.method == "gmp":
        last = total - 1  # the last step that runs: --gmp-end 1 still reaches the final density
        return GradualMagnitude(final_density=s.density, start=min(int(s.gmp_start * total), last),
                                end=min(int(s.gmp_end * total), last), every=s.delta_t)
    if t_end <= s.delta_t and s.method != "static":
        raise JackpotError(f"--t-end {s.t_end} of {total} steps leaves no mask update at --delta-t {s.delta_t}")
    schedule = UpdateSchedule(delta_t=s.delta_t, alpha=s.alpha, t_end=t_end, kind=s.drop_schedule)
    return make_method(s.method, schedule, grow_init=s.grow_init, skip_step=s.skip_step,
                       grad_accumulation=s.grad_accumulation, seed=ctx.cfg.seed)


def _small_dense_width(ctx: RunContext) -> float:
    """The width whose dense model has as many parameters as the sparse one (nnz + dense params)."""
    from ..models import width_for_params
    from ..sparse.distributions import counts_from_densities
    model = ctx.new_model(("init",))
    names = ctx.prunable(model)
    params = dict(model.named_parameters())
    counts = counts_from_densities(ctx.layer_densities(ctx.cfg.sparse.distribution, model, names, ctx.cfg.sparse.density),
                                   {n: params[n].shape for n in names})
    target = sum(p.numel() for p in model.parameters()) - sum(params[n].numel() for n in names) + sum(counts.values())
    return width_for_params(ctx.cfg.model.model, ctx.dataset.input_shape, ctx.dataset.num_classes, target)


def _summary(ctx: RunContext, model: torch.nn.Module, total: int, width: float) -> dict:
    """Inference and training FLOPs (RigL appendix H) and model size, as ratios to dense."""
    s, shape, batch = ctx.cfg.sparse, ctx.dataset.input_shape, ctx.cfg.data.batch_size
    masks = Masks.load(ctx.run.stage("train", "mask.pt")) if ctx.run.stage("train", "mask.pt").exists() else None
    dense_model = ctx.new_model(("init",))
    f_dense = inference_flops(dense_model, shape)["dense"]
    f_sparse = inference_flops(model, shape, masks)["sparse"]
    # DSR trains sparse throughout like SET (3 f_S per example; f_S of its final, drifted mask)
    method = {"dsr": "set"}.get(s.method, s.method)
    schedule = None
    if s.method == "gmp":
        rows = layer_flops(dense_model, shape)
        gmp = _callback(ctx, total)
        masked = {n.rpartition(".")[0] for n in masks} if masks else set()

        def f_at(step: int) -> float:
            d = gmp.density_at(step)
            return sum(2 * (keep_count(d, r["params"]) if r["name"] in masked else r["params"]) * r["positions"]
                       for r in rows)
        schedule = f_at
    train_flops = training_flops(method, f_dense, f_sparse, total, batch, delta_t=s.delta_t,
                                 density_schedule=schedule)
    dense_train = training_flops("dense", f_dense, f_dense, round(total / s.extend), batch)
    size = model_size_bits(model, masks)
    return {"method": s.method, "density": masks.density() if masks else 1.0, "width": width,
            "inference_flops": f_sparse, "inference_flops_dense": f_dense,
            "inference_flops_ratio": f_sparse / f_dense, "train_flops": train_flops,
            "train_flops_ratio": train_flops / dense_train, "size_bits": size["sparse"],
            "size_ratio": size["sparse"] / model_size_bits(dense_model)["dense"], "steps": total,
            "layers": masks.report() if masks else []}

