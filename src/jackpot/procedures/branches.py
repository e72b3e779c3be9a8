"""Branches: ablations and transfers off a ticket (a lottery level) or a pruned-at-init network.

One typed spec per branch, stored under the run it comes from with its own hash:
    <run>/branches/<kind>-L<level>-<hash>/  config.json, train/, summary.json
Kinds:
  reinit     same mask, fresh random initialisation, trained like the lottery's reinit control
             (0 -> T with the full schedule when the ticket keeps trained weights); --rescale
             multiplies each layer's kept weights by 1/sqrt(layer density), the standard init scale
             for the remaining fan-in (Morcos et al. 2019 reviewers' point);
  rearrange  same count per layer, new uniformly random positions, weights of the rewind point;
  shuffle    same mask, surviving weight values permuted among surviving positions per layer;
  invert     same per-layer counts, the *lowest* scores kept (pai: the run's score inverted;
             lottery: the lowest of the magnitudes level L was ranked on, chosen inside the level
             L-1 mask, so only the last pruning step is inverted: weights pruned at the levels
             before L stay pruned);
  retrain    same mask and start weights, with any other training (optimizer, schedule, retraining
             mode) and/or another dataset: a transfer ("One ticket to win them all"). Masks map by
             parameter name; layers whose shape depends on the class count are re-created, randomly
             initialised and left dense; any other shape mismatch is an error unless the layer is
             listed in --exclude (then re-created too). Late-reset weights travel with the mask.
             The branch's density is over the target's prunable set, re-created layers as dense.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig, canonical, derive_seed, same_hashed, split_list, to_dict
from ..errors import JackpotError
from ..sparse import Masks
from ..sparse.prunable import check_layer_names, layer_of, output_layer
from ..store import Run, atomic_write_json, check_threads, device_kind, read_json, stage_done
from ..train import lr_at, train_stage
from .context import RunContext, report_stage, write_dataset_record
from .registry import Source, procedure

BRANCH_KINDS = ("reinit", "rearrange", "shuffle", "invert", "retrain")


@dataclass(frozen=True)
class BranchSpec:
    kind: str
    level: int = 1
    seed: int = 0
    rescale: bool = False
    exclude: str = ""
    retrain: str = ""  # lottery tickets: rewind, lr-rewind or finetune instead of the run's own mode

    def __post_init__(self):
        if self.kind not in BRANCH_KINDS:
            raise JackpotError(f"unknown branch {self.kind!r}; choose {', '.join(BRANCH_KINDS)}")
        if self.retrain not in ("", "rewind", "lr-rewind", "finetune"):
            raise JackpotError(f"unknown --retrain {self.retrain!r}; choose rewind, lr-rewind or finetune")
        if self.rescale and self.kind != "reinit":  # it would change nothing but the branch's name
            raise JackpotError(f"--rescale scales fresh weights: it applies to reinit branches, not {self.kind}")


def _without_unread_retrain(ctx: RunContext, spec: BranchSpec) -> BranchSpec:
    """--retrain naming the run's own mode, or, for a reinit branch (fresh weights), a mode whose
    training span is the run's own, changes nothing: the same branch, in one directory."""
    if not spec.retrain:
        return spec
    same = spec.retrain == ctx.cfg.lottery.retrain
    if not same and spec.kind == "reinit":
        own, asked = (ticket_source(ctx, spec.level, mode, arm="reinit") for mode in ("", spec.retrain))
        same = (own.start, own.end, own.fixed_lr) == (asked.start, asked.end, asked.fixed_lr)
    return dataclasses.replace(spec, retrain="") if same else spec


def branch_dir(parent: Run, spec: BranchSpec, cfg: RunConfig) -> Path:
    # Like run hashes: only fields that differ from their defaults, so new no-op options keep old names.
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name in ("kind", "level") or getattr(spec, f.name) != f.default}
    key = json.dumps({"spec": fields, "config": canonical(cfg)}, sort_keys=True)
    return parent.path / "branches" / f"{spec.kind}-L{spec.level}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def ticket_source(ctx: RunContext, level: int, retrain: str = "", arm: str = "ticket") -> Source:
    """What a branch of the run starts from: its procedure says (lottery: the ticket at `level`,
    `retrain` switching its retraining mode and `arm` "reinit" giving the span of fresh weights;
    pai: the run's mask and initial weights)."""
    source = procedure(ctx.cfg.kind).branch_source
    if source is None:
        raise JackpotError(f"cannot branch off a {ctx.cfg.kind} run: branches start from a lottery level or a pai run")
    return source(ctx, level, retrain, arm)


def apply_branch(ctx: RunContext, spec: BranchSpec, src: Source) -> Source:
    """The branch's own mask and start weights (all random acts seeded by the spec)."""
    g = torch.Generator().manual_seed(derive_seed(ctx.cfg.seed, "branch", spec.kind, spec.seed))
    masks, weights = src.masks, dict(src.weights)
    if spec.kind == "reinit":
        weights = ctx.new_model(("branch-reinit", spec.seed)).state_dict()
        if spec.rescale:
            for n, m in masks.items():
                weights[n] = weights[n] / math.sqrt(max(m.float().mean().item(), 1e-12))
    elif spec.kind == "rearrange":
        masks = masks.random_like(g)
    elif spec.kind == "shuffle":
        for n, m in masks.items():
            w = weights[n].clone()
            values = w[m]
            w[m] = values[torch.randperm(values.numel(), generator=g)]
            weights[n] = w
    elif spec.kind == "invert":
        masks = procedure(ctx.cfg.kind).inverted_mask(ctx, spec.level, masks)
    return dataclasses.replace(src, masks=masks, weights=weights)


def transfer(src: Source, target: torch.nn.Module, exclude: list[str],
             prunable: list[str] | None = None) -> tuple[Source, dict]:
    """Map the source's mask and weights onto `target` by parameter name (see module docstring).
    A re-created parameter of the target's prunable set (default: the ones the source masks) gets
    an all-ones mask: the masks keep covering the prunable set, so the branch's density counts it
    as the dense layer it is."""
    out_layer = output_layer(target)
    weights, masks, mapping = target.state_dict(), Masks(), {"transferred": [], "recreated": []}
    prunable = set(src.masks if prunable is None else prunable)
    for name, value in weights.items():
        old = src.weights.get(name)
        layer = layer_of(name)
        if old is not None and tuple(old.shape) == tuple(value.shape) and layer not in exclude:
            weights[name] = old.clone()
            if name in src.masks:
                masks[name] = src.masks[name].clone()
            mapping["transferred"].append(name)
        elif layer == out_layer or layer in exclude or old is None:
            mapping["recreated"].append(name)  # fresh init of the target model, left dense
            if name in prunable:
                masks[name] = torch.ones_like(value, dtype=torch.bool)
        else:
            raise JackpotError(f"cannot transfer {name}: shape {tuple(old.shape)} in the ticket, "
                               f"{tuple(value.shape)} in the target model (exclude its layer {layer!r} "
                               f"to re-create it)")
    return dataclasses.replace(src, masks=masks, weights=weights), mapping


def run_branch(parent: Run, spec: BranchSpec, cfg: RunConfig, device="cpu", progress=print,
               wait: bool = False) -> Path:
    """Train one branch (skipped when finished). `cfg` is the parent's config with any changes;
    `wait`: wait for another process computing the same branch instead of refusing."""
    parent_cfg = parent.config()
    if cfg.kind != parent_cfg.kind or cfg.seed != parent_cfg.seed:
        raise JackpotError("a branch keeps its parent's procedure and seed; use --branch-seed for its own draws")
    if not procedure(parent_cfg.kind).levels and (spec.level != BranchSpec.level or spec.retrain):
        # not read for a pai parent: they would only split one branch into identical directories
        raise JackpotError("--level and --retrain choose a lottery ticket's level and retraining mode; a pai run "
                           "has one mask and one training: drop them")
    pctx = RunContext.attach(parent, device, progress)
    spec = _without_unread_retrain(pctx, spec)
    path = branch_dir(parent, spec, cfg)
    bctx = RunContext.attach(Run(path), device, progress, cfg=cfg)
    # Everything that can refuse the input comes before the branch directory exists.
    src = apply_branch(pctx, spec, ticket_source(pctx, spec.level, spec.retrain,
                                                 arm="reinit" if spec.kind == "reinit" else "ticket"))
    target = bctx.new_model(("transfer-init", spec.seed))
    check_layer_names(target, split_list(spec.exclude))
    src, mapping = transfer(src, target, split_list(spec.exclude), prunable=bctx.prunable(target))
    # new training, or the same --duration in epochs of another dataset: the branch's own span
    # (start kept; fine-tuning at its final LR)
    if not same_hashed(cfg.train, parent_cfg.train) or bctx.total_steps != src.end:
        total = bctx.total_steps
        if src.start >= total:
            raise JackpotError(f"the ticket starts at step {src.start}, not before the branch's end ({total} steps "
                               f"of {cfg.train.duration} on {cfg.data.dataset}): give a longer --duration")
        src = dataclasses.replace(src, end=total, fixed_lr=lr_at(
            total - 1, total, bctx.train_in_steps(), bctx.steps_per_epoch) if src.fixed_lr is not None else None)
    if (path / "config.json").exists() and not ((path / "summary.json").exists() and stage_done(path / "train")):
        check_threads(path, device=device)  # a branch resumes under the thread count and device it was begun with
    with Run(path).lock(wait=wait, progress=progress):
        if not (path / "config.json").exists():
            atomic_write_json(path / "config.json", {"parent": str(parent.path), "branch": dataclasses.asdict(spec),
                                                     "canonical": canonical(cfg), "config": to_dict(cfg),
                                                     "threads": torch.get_num_threads(), "device": device_kind(device)})
        write_dataset_record(path, bctx.dataset)  # its own data (a transfer may change it): export reads it
        target.load_state_dict(src.weights)
        label = pctx.label(f"branch {spec.kind}{' rescaled' if spec.rescale else ''} of level {spec.level} "
                           f"{100 * src.masks.density():.1f}% weights")
        t0 = time.perf_counter()
        record = train_stage(bctx.stage("train", target, src.masks, src.start, src.end, label,
                                        fixed_lr=src.fixed_lr))
        report_stage(pctx, label, record, time.perf_counter() - t0)
        atomic_write_json(path / "summary.json", {"density": src.masks.density(), "final": record["final"],
                                                  "best": record["best"], "mapping": mapping,
                                                  "layers": src.masks.report()})
    return path


def branch_summary(path: Path) -> dict:
    return read_json(Path(path) / "summary.json", "branch summary")


def run_branch_job(job: tuple) -> Path:
    """Process-pool entry point: job = (parent run path, BranchSpec, branch config)."""
    parent, spec, cfg = job
    return run_branch(Run(Path(parent)), spec, cfg, progress=lambda line: print(line, flush=True))
