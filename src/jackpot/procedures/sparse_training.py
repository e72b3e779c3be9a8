"""Sparse training from scratch (RigL, SET, SNFS, DSR, static), gradual magnitude pruning, and the
fair baselines (dense, small-dense), with FLOPs accounting in every run's summary.

Run directory: init.pt, mask_init.pt (the initial mask), train/ (metrics, final weights, final
mask, done.json) and summary.json (accuracy, FLOPs and model size vs dense).
`--extend N` trains N times longer; the LR milestones, warm-up and the mask-update end T_end
scale with it (RigL's 2x/5x runs).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from ..config import KindSpec, RunConfig, check_density, split_list
from ..errors import JackpotError
from ..flops import TrainingFlopsMeter, examples_at, inference_flops, model_size_bits
from ..models import width_for_params
from ..sparse import Masks
from ..sparse.distributions import check_collapse, counts_from_densities, random_masks
from ..sparse.dst import METHODS as DST_METHODS, UpdateSchedule, make_method
from ..sparse.gmp import GradualMagnitude
from ..store import Run, atomic_write_json
from ..launch import ddp
from ..train import train_stage
from ..train.loop import SPARSE_DDP
from .context import RunContext, report_stage
from .registry import Procedure, register

METHODS = ("dense", "small-dense", "gmp", *DST_METHODS)
UPDATING = tuple(m for m in DST_METHODS if m != "static")  # the methods whose mask changes


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
    s = ctx.cfg.sparse
    names = ctx.prunable(model)
    densities = ctx.layer_densities(s.distribution, model, names, s.density)
    return random_masks(model, names, densities, ctx.generator("initial-mask"))


def check(ctx: RunContext, model: torch.nn.Module) -> float:
    """Every refusal the config allows, made before the run directory exists (and by a sweep's
    preflight): the budget fits the model, the schedule leaves a mask update. Returns the width
    (small-dense: the one matching the sparse parameter count; else 1)."""
    s = ctx.cfg.sparse
    _, total = extended_train(ctx)
    if s.method == "small-dense":
        return _small_dense_width(ctx)
    if s.method != "dense":
        names = ctx.prunable(model)
        # GMP prunes every layer to the density itself (sparse/gmp.py): uniform counts
        distribution = "uniform" if s.method == "gmp" else s.distribution
        densities = ctx.layer_densities(distribution, model, names, s.density)
        shapes = {n: p.shape for n, p in model.named_parameters() if n in names}
        # an emptied layer disconnects the network, and no update regrows it (it drops nothing)
        check_collapse(counts_from_densities(densities, shapes),
                       refusal=f"layer collapse: {{layers}} would keep no weights at --density {s.density:g} "
                               f"(--distribution {distribution}); raise --density")
        _callback(ctx, total)
    if ctx.cfg.train.execution == "sparse" and ddp.is_distributed():
        raise JackpotError(SPARSE_DDP)
    return 1.0


def run_sparse(cfg: RunConfig, root=None, device="cpu", progress=print, dataset=None, wait=False) -> Run:
    s = cfg.sparse
    found = {}
    ctx = RunContext.open(cfg, root, device, progress, dataset, wait=wait,
                          check=lambda ctx, model: found.update(width=check(ctx, model)))
    train_cfg, total = extended_train(ctx)
    ctx.cfg = replace(ctx.cfg, train=train_cfg)
    with ctx.lock():
        width = found["width"]
        model = ctx.new_model(("init",), width=width)
        ctx.save_once(model.state_dict(), "init.pt")
        masks, callbacks = None, []
        if s.method not in ("dense", "small-dense"):
            masks = Masks.ones_for(model, ctx.prunable(model)) if s.method == "gmp" else initial_masks(ctx, model)
            ctx.save_once(dict(masks), "mask_init.pt")
            # the initial values only where grown weights redraw from them: held all run, they are
            # dense, which a sparse execution must not keep
            init_values = ({n: p.detach() for n, p in model.named_parameters() if n in masks}
                           if s.grow_init == "init" else None)
            callbacks = [_callback(ctx, total, init_values=init_values)]
        # after the mask callback: it charges each step for the masks its forward really used
        callbacks.append(TrainingFlopsMeter(model, ctx.dataset.input_shape, ctx.dataset.num_train,
                                            cfg.data.batch_size, getattr(callbacks[0], "dense_gradient_at", None)
                                            if callbacks else None))
        label = ctx.label(f"{s.method} density {s.density:g}")
        t0 = time.perf_counter()
        record = train_stage(ctx.stage("train", model, masks, 0, total, label, callbacks=callbacks))
        report_stage(ctx, label, record, time.perf_counter() - t0)
        summary = _summary(ctx, model, total, width, record)
        atomic_write_json(ctx.run.stage("summary.json"), {**summary, "final": record["final"],
                                                          "best": record["best"],
                                                          "execution": record.get("execution", {"mode": "masked"})})
        progress(f"done: {ctx.run.path}")
    return ctx.run


def _callback(ctx: RunContext, total: int, init_values: dict | None = None):
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
                       grad_accumulation=s.grad_accumulation, seed=ctx.cfg.seed,
                       weight_init=ctx.cfg.model.init, init_values=init_values)


def _small_dense_width(ctx: RunContext) -> float:
    """The width whose dense model has as many parameters as the sparse one (nnz + dense params)."""
    model = ctx.new_model(("init",))
    names = ctx.prunable(model)
    params = dict(model.named_parameters())
    counts = counts_from_densities(ctx.layer_densities(ctx.cfg.sparse.distribution, model, names, ctx.cfg.sparse.density),
                                   {n: params[n].shape for n in names})
    target = sum(p.numel() for p in model.parameters()) - sum(params[n].numel() for n in names) + sum(counts.values())
    return width_for_params(ctx.cfg.model.model, ctx.dataset.input_shape, ctx.dataset.num_classes, target)


def _summary(ctx: RunContext, model: torch.nn.Module, total: int, width: float, record: dict) -> dict:
    """Inference FLOPs and model size as ratios to dense; training FLOPs of the steps that really
    ran (TrainingFlopsMeter, RigL appendix H step by step) against a dense run of the same length."""
    s, shape, ds = ctx.cfg.sparse, ctx.dataset.input_shape, ctx.dataset
    masks = Masks.load(ctx.run.stage("train", "mask.pt")) if ctx.run.stage("train", "mask.pt").exists() else None
    # dense FLOPs and size read the architecture only: the run's own model is it at full width
    dense_model = model if width == 1.0 else ctx.new_model(("init",))
    f_dense = inference_flops(dense_model, shape)["dense"]
    f_sparse = inference_flops(model, shape, masks)["sparse"]
    if "train_flops" not in record:
        raise JackpotError(f"{ctx.run.stage('train')} was trained by an older jackpot that did not count "
                           "training FLOPs step by step; move it away and re-run to retrain it")
    train_flops = record["train_flops"]
    dense_examples = sum(examples_at(t, ds.num_train, ctx.cfg.data.batch_size) for t in range(round(total / s.extend)))
    dense_train = 3 * f_dense * dense_examples
    size = model_size_bits(model, masks)
    density = masks.density() if masks else 1.0
    if s.method == "small-dense":  # its weights as a fraction of the full model's prunable weights
        full, small = dict(dense_model.named_parameters()), dict(model.named_parameters())
        names = ctx.prunable(dense_model)
        density = sum(small[n].numel() for n in names) / sum(full[n].numel() for n in names)
    return {"method": s.method, "density": density, "width": width,
            "inference_flops": f_sparse, "inference_flops_dense": f_dense,
            "inference_flops_ratio": f_sparse / f_dense, "train_flops": train_flops,
            "train_flops_ratio": train_flops / dense_train, "size_bits": size["sparse"],
            "size_ratio": size["sparse"] / model_size_bits(dense_model)["dense"], "steps": total,
            "layers": masks.report() if masks else []}


def label(cfg: RunConfig) -> str:
    """`rigl (erk)`, `rigl (erk) 5x`, `gmp`, `dense`: the method, its initial distribution, --extend."""
    s = cfg.sparse
    text = s.method if s.method in ("dense", "gmp") else f"{s.method} ({s.distribution})"
    return text + (f" {s.extend:g}x" if s.extend != 1 else "")


def _validate(cfg: RunConfig) -> None:
    s = cfg.sparse
    if cfg.data.corrupt:
        raise JackpotError("--corrupt applies to mask finding (lottery, pai), not to sparse training")
    if s.method not in METHODS:
        raise JackpotError(f"unknown sparse training method {s.method!r}; choose {', '.join(METHODS)}")
    check_density(s.density)
    UpdateSchedule(delta_t=s.delta_t, alpha=s.alpha, kind=s.drop_schedule)  # raises on bad values
    if not 0.0 < s.t_end <= 1.0:
        raise JackpotError(f"--t-end must be a fraction of training in (0, 1], got {s.t_end}")
    if not 0.0 <= s.gmp_start < s.gmp_end <= 1.0:
        raise JackpotError(f"need 0 <= --gmp-start < --gmp-end <= 1, got {s.gmp_start} and {s.gmp_end}")
    if s.grow_init not in ("zero", "init"):
        raise JackpotError(f"unknown --grow-init {s.grow_init!r}; choose zero or init")
    if s.grad_accumulation < 1:
        raise JackpotError(f"--grad-accumulation must be >= 1, got {s.grad_accumulation}")
    if not (math.isfinite(s.extend) and 0 < s.extend <= 1000):
        raise JackpotError(f"--extend must be a positive factor (at most 1000), got {s.extend}")


def _updating(c: RunConfig) -> bool:
    return c.sparse.method in UPDATING


CONFIG = KindSpec(
    groups=("data", "model", "train", "masks", "sparse"),
    read_when={  # run_sparse, initial_masks, _small_dense_width, _callback, _summary
        "data.corrupt": lambda c: False,  # refused: sparse training has no mask-finding data
        "masks": lambda c: c.sparse.method != "dense",  # dense: no mask at all
        "sparse.density": lambda c: c.sparse.method != "dense",
        "sparse.distribution": lambda c: c.sparse.method in ("static", "small-dense", *UPDATING),
        "sparse.delta_t": lambda c: c.sparse.method == "gmp" or _updating(c),
        "sparse.alpha": _updating,
        "sparse.drop_schedule": _updating,
        "sparse.t_end": _updating,
        "sparse.grow_init": _updating,
        "sparse.skip_step": _updating,
        "sparse.grad_accumulation": lambda c: c.sparse.method == "rigl",  # the only method reading dense grads
        "sparse.gmp_start": lambda c: c.sparse.method == "gmp",
        "sparse.gmp_end": lambda c: c.sparse.method == "gmp",
        "train.execution": lambda c: c.sparse.method not in ("dense", "small-dense"),  # no masks: nothing sparse
    },
    validate=_validate,
)

PROCEDURE = register(Procedure(
    kind="sparse", config=CONFIG,
    help="sparse training from scratch (RigL, SET, SNFS, DSR, static, GMP) and dense / small-dense baselines",
    description="Dynamic sparse training with FLOPs accounting (RigL appendix H).",
    run=run_sparse, check=check, stages=lambda cfg: ["train"],
    mask_path=lambda run, level=None: run.stage("train", "mask.pt"),
    trained_stage=lambda run, level=None, arm="": run.stage("train"),
    label=label, levels=False,
    target_density=lambda cfg: 1.0 if cfg.sparse.method == "dense" else cfg.sparse.density,
    family=lambda cfg: cfg.sparse.method))
