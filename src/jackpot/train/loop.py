"""The training loop: one stage = train a (masked) model from step `start` to step `end`.

Everything random is a function of (order_seed, step): the data order of epoch e is a permutation
seeded by (order_seed, e) and augmentation of step s by (order_seed, s). So a stage resumed from a
checkpoint at step s, or a retraining rewound to step k, sees exactly the batches and learning
rates an uninterrupted run sees. Checkpoints hold model, optimizer and masks; metrics lines after
the checkpoint are dropped on resume, so the metrics file also ends identical.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import progress
from ..config import TrainConfig, derive_seed
from ..data.augment import augment_batch
from ..data.dataset import Dataset
from ..sparse import Masks, Sparsifier
from ..sparse.masks import pack_mask_dict, unpack_mask_dict
from ..sparse.execution import SparseExecution, choose_layers
from ..launch import ddp
from ..errors import JackpotError
from ..store import (atomic_torch_save, atomic_write_json, atomic_write_text, is_primary, make_dirs, read_json,
                     safe_torch_load, stage_problem, weights_mismatch, writing)
from . import numerics
from .live_log import LiveLog
from .optim import build_optimizer, lr_at

EVAL_BATCH = 1000


@dataclass
class Stage:
    """What to train and where its files go."""

    dir: Path
    model: torch.nn.Module
    dataset: Dataset
    train: TrainConfig
    batch_size: int
    order_seed: int
    start: int
    end: int
    masks: Masks | None = None
    device: torch.device = torch.device("cpu")
    # step -> callable(model) run before the update at that step (e.g. save the rewind point)
    at_step: dict[int, Callable[[torch.nn.Module], None]] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None
    checkpoint_every: int = 0  # steps; 0 = every epoch (unless checkpoint_seconds is set)
    checkpoint_seconds: float = 0.0  # > 0: a checkpoint once this much time has passed since the last
    # files the stage writes besides final.pt and mask.pt (e.g. at_step's rewind point): done.json
    # vouches for them too, so a lost one makes the stage recompute (and rewrite) it
    outputs: list[Path] = field(default_factory=list)
    # objects with optional on_step_start(step, model, sparsifier), after_backward(step, model,
    # sparsifier) -> bool (True skips the optimizer step), state_dict()/load_state_dict()
    callbacks: list = field(default_factory=list)
    fixed_lr: float | None = None  # fine-tuning: one learning rate throughout
    schedule_end: int | None = None  # the step the LR schedule is laid out to (default: end)
    shuffle: bool = True  # False: every epoch takes the batches in the stored order
    hparams: dict = field(default_factory=dict)  # the run's settings, for live loggers (train.log)
    name: str = ""  # how live loggers name the stage
    label: str = ""  # how a progress bar names it
    workers: int = 0  # streamed datasets (folder:): decoding processes (0: in this process)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset.num_train / self.batch_size)


def is_done(stage_dir: Path) -> bool:
    """Finished, with the files done.json vouches for in place (jackpot.store.stage_problem)."""
    return stage_problem(stage_dir) is None


def _finished_problem(stage: Stage) -> str | None:
    """stage_problem, then the files themselves: they load and fit the stage's model and masks."""
    d = Path(stage.dir)
    problem = stage_problem(d)
    if problem:
        return problem
    try:
        mismatch = weights_mismatch(stage.model, safe_torch_load(d / "final.pt"))
        if mismatch:
            return f"final.pt {mismatch}"
        if stage.masks is not None:
            Masks.load(d / "mask.pt").check_against(stage.model)
    except JackpotError as e:
        return str(e).split(";")[0]
    return None


def train_stage(stage: Stage) -> dict:
    """Train (or resume, or skip when finished) and return the stage's done.json record. A stage
    whose done.json vouches for files that are missing, damaged or do not fit is recomputed."""
    d = Path(stage.dir)
    primary = is_primary()
    problem = _finished_problem(stage)
    if problem is None:
        return read_json(d / "done.json", "stage record")
    shares = ddp_batch_problem(stage.model, stage.dataset.num_train, stage.batch_size, ddp.world_size())
    if shares:  # every rank refuses alike, before this stage touches a file
        raise JackpotError(shares)
    if stage.train.execution == "sparse" and ddp.is_distributed():
        raise JackpotError(SPARSE_DDP)
    if (d / "done.json").exists() and primary:  # recompute it from the start, outputs included
        print(f"jackpot: warning: stage {d} is not whole ({problem}); recomputing it", file=sys.stderr)
        for path in [d / "done.json", d / "checkpoint.pt", *map(Path, stage.outputs)]:
            if path.exists():
                path.unlink()
    ddp.barrier()  # every rank decides on resuming after that clean-up
    if primary:
        make_dirs(d)
    t = stage.train
    numerics.configure_device(stage.device, t.precision, t.deterministic, t.denormals)
    model = numerics.memory_format(stage.model.to(stage.device), t.channels_last)
    sparsifier = _sparsifier(stage, model, d / "checkpoint.pt")
    optimizer = build_optimizer(model.parameters(), stage.train)
    if sparsifier:
        sparsifier.attach(optimizer)
    net, callbacks = model, stage.callbacks
    sparse = isinstance(sparsifier, SparseExecution)
    if sparse:  # mask methods see dense weights only at the steps they read them
        callbacks = [sparsifier.wrap(cb) for cb in callbacks]
    distributed = ddp.is_distributed()
    if distributed:  # one run on many processes: see jackpot.launch.ddp
        net = ddp.wrap(model, stage.device)
        callbacks = [ddp.MaskSync(cb) for cb in stage.callbacks]
    net = numerics.compiled(net, t.compile)
    scaler = numerics.grad_scaler(stage.device, t.precision)

    step = stage.start
    metrics_path = d / "metrics.jsonl"
    ckpt_path = d / "checkpoint.pt"
    running = []  # this epoch's training losses so far (a checkpoint may fall mid-epoch)
    if ckpt_path.exists():
        ckpt = safe_torch_load(ckpt_path)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if sparsifier:
                sparsifier.set_masks(Masks(unpack_mask_dict(ckpt["masks"])))
            step = int(ckpt["step"])
            for cb, state in zip(callbacks, ckpt.get("callbacks", [])):
                cb.load_state_dict(state)
            if scaler is not None:
                scaler.load_state_dict(ckpt["scaler"])
            running = list(ckpt.get("running", torch.empty(0)).to(stage.device).unbind(0))
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise JackpotError(f"corrupt checkpoint {ckpt_path} (does not fit this stage: {type(e).__name__}); "
                               "move it away and re-run to restart that stage") from None
        if primary:
            _truncate_metrics(metrics_path, step)
    elif metrics_path.exists() and primary:
        metrics_path.unlink()  # metrics of an attempt that never reached a checkpoint

    data = _Batches(stage, step)
    # the evaluation splits move to the device once, not at every evaluation
    splits = {k: (split[0].to(stage.device), split[1].to(stage.device)) if isinstance(split, tuple) else (split, None)
              for k, split in stage.dataset.evaluation_splits().items()}
    log = _MetricsLog(metrics_path if primary else None)
    live = LiveLog(t.log if primary else "", d, step, stage.hparams, stage.name or d.name)
    cost = _CostMeter(stage.device)
    bar = progress.StageBar(stage.label or d.name, stage.start, stage.end, step) \
        if primary and stage.progress and progress.bars() else None
    spe = stage.steps_per_epoch
    every = stage.checkpoint_every or (0 if stage.checkpoint_seconds else spe)
    t0 = last_checkpoint = time.perf_counter()
    diverged = False
    if step == stage.start:
        record = _evaluate(model, stage, step, splits)
        log.write(record)
        if live:  # the extras cost a host sync per layer: only for a live view
            live.write(record, _live_extras(cost, sparsifier, callbacks))
    while step < stage.end:
        cost.start(step)
        if step in stage.at_step:
            stage.at_step[step](sparsifier.dense_model() if sparse else model)
        for cb in callbacks:
            if hasattr(cb, "on_step_start"):
                cb.on_step_start(step, model, sparsifier)
        model.train()
        x, y = data.batch(step)
        lr = stage.fixed_lr if stage.fixed_lr is not None else lr_at(step, _horizon(stage), stage.train, spe)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        x = numerics.inputs_format(x, t.channels_last)
        with numerics.autocast(stage.device, t.precision):
            if not distributed:
                loss = F.cross_entropy(net(x), y)
                loss_sum = None
            else:  # DDP averages gradients over ranks: scale this rank's sum so that is the batch mean
                count = data.global_size(step)
                loss_sum = F.cross_entropy(net(x), y, reduction="sum")
                loss = loss_sum * (ddp.world_size() / count)
        if scaler is None:
            loss.backward()
        else:  # fp16: scaled backward, then true gradients for the callbacks (RigL reads them)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        skip = False
        for cb in callbacks:
            if hasattr(cb, "after_backward"):
                skip = cb.after_backward(step, model, sparsifier) or skip
        if scaler is None:
            if not skip:
                optimizer.step()
        else:
            if not skip:
                scaler.step(optimizer)  # skipped by the scaler itself when gradients overflowed
            scaler.update()
        cost.stop()
        step += 1
        if bar:
            bar.step()
        # the whole batch's loss (not this rank's share), the same on every rank: NaN on every rank
        # when any rank's is, so all of them decide divergence alike and stop at the same step
        running.append(loss.detach() if loss_sum is None else ddp.batch_mean(loss_sum, count))
        if (step % spe == 0) or step == stage.end:
            train_loss = float(torch.stack(running).mean())
            running = []
            record = _evaluate(model, stage, step, splits)
            record["train_loss"] = train_loss
            log.write(record)
            if live:  # the extras cost a host sync per layer: only for a live view
                live.write(record, _live_extras(cost, sparsifier, callbacks))
            if bar:
                bar.show(record)
            elif stage.progress and primary:
                stage.progress(_progress_line(record, step, stage, time.perf_counter() - t0))
            if not math.isfinite(train_loss):
                diverged = True
                break
        due = (every and step % every == 0) or (
            stage.checkpoint_seconds and time.perf_counter() - last_checkpoint >= stage.checkpoint_seconds)
        if due and step < stage.end:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "masks": pack_mask_dict(sparsifier.masks) if sparsifier else None, "step": step,
                               "execution": sparsifier.plan if sparse else None,
                               "callbacks": [cb.state_dict() for cb in callbacks],
                               "scaler": scaler.state_dict() if scaler is not None else None,
                               "running": torch.stack(running) if running else torch.empty(0)},
                              ckpt_path)
            last_checkpoint = time.perf_counter()

    if bar:
        bar.close()
    if distributed:
        _check_ranks_agree(model, sparsifier)
    # dense like a masked run's (sparse layers materialised one at a time)
    final_state = sparsifier.dense_state_dict() if sparse else {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(final_state, d / "final.pt")
    if sparsifier:
        sparsifier.masks.save(d / "mask.pt")
        sparsifier.detach()
    if primary:
        record = _summarise(metrics_path, stage, diverged, sparsifier)
        record["cost"] = cost.summary(model, optimizer)
        if sparse:  # the masked-dense reference of the same network, timed here and now
            sparsifier.restore()
            record["cost"]["reference_step_seconds"] = _masked_reference_seconds(stage, model, sparsifier.masks,
                                                                                 final_state)
            record["cost"]["reference"] = f"masked dense, this process, median of {REFERENCE_STEPS} steps"
        for cb in stage.callbacks:
            if hasattr(cb, "summary"):
                record.update(cb.summary())
        if sparse:
            record["execution"] = sparsifier.record()
        # the sizes let a cheap look (stage_problem) notice a file truncated or replaced later
        files = [d / "final.pt"] + ([d / "mask.pt"] if sparsifier else []) + [p for p in map(Path, stage.outputs) if p.exists()]
        record["files"] = {os.path.relpath(p, d): p.stat().st_size for p in files}
        atomic_write_json(d / "done.json", record)  # written last: the stage is complete
        live.close(record["final"])
        if ckpt_path.exists():
            ckpt_path.unlink()
    if sparse and not primary:  # the caller gets its dense model back, with the trained weights
        sparsifier.restore()
    ddp.barrier()  # every rank sees the finished stage before going on
    return read_json(d / "done.json", "stage record")


REFERENCE_STEPS = 3  # a 4096-wide masked step takes ~0.5 s: each one is paid in the sparse run


def _masked_reference_seconds(stage: Stage, model: torch.nn.Module, masks: Masks, final_state: dict) -> float:
    """Median wall-clock of a masked-dense training step of `model` (forward, backward, masked
    gradients, optimizer step) on a batch of the stage's data: what --execution masked would have
    paid per step on this machine, beside what sparse execution paid. The steps train `model`
    itself (a copy of a 4096-wide MLP costs ~0.4 s); `final_state`, its state before them, is
    loaded back after (cloned first where it is the model's own tensor: a masked layer's on a CPU)."""
    own = {t.data_ptr() for t in model.state_dict().values()}
    before = {k: v.clone() if v.data_ptr() in own else v for k, v in final_state.items()}
    try:
        return _time_masked_steps(stage, model, masks)
    finally:
        model.load_state_dict(before)
        model.zero_grad(set_to_none=True)


def _time_masked_steps(stage: Stage, ref: torch.nn.Module, masks: Masks) -> float:
    optimizer = build_optimizer(ref.parameters(), stage.train)
    sparsifier = Sparsifier(ref, masks)
    sparsifier.attach(optimizer)
    n = min(stage.batch_size, stage.dataset.num_train)
    x, y = stage.dataset.examples(torch.arange(n))
    x, y = numerics.inputs_format(x.to(stage.device), stage.train.channels_last), y.to(stage.device)
    meter = _CostMeter(stage.device)
    meter.every = 1
    ref.train()
    for step in range(REFERENCE_STEPS + 1):  # the first step warms up
        meter.start(step)
        optimizer.zero_grad(set_to_none=True)
        with numerics.autocast(stage.device, stage.train.precision):
            loss = F.cross_entropy(ref(x), y)
        loss.backward()
        optimizer.step()
        meter.stop()
    sparsifier.detach()
    return statistics.median(meter.seconds[1:])


def _live_extras(cost, sparsifier, callbacks) -> dict:
    """What a live view shows beside the evaluation record: step time, layer densities, the
    latest DST mask update."""
    out = {}
    if cost.seconds:
        out["step_seconds"] = statistics.median(cost.seconds)
    if sparsifier:
        out.update({f"density/{r['name']}": r["density"] for r in sparsifier.masks.report()})
    for cb in callbacks:
        history = getattr(getattr(cb, "inner", cb), "history", None)
        if history:
            out.update({f"mask_update/{k}": v for k, v in history[-1].items() if k != "step"})
    return out


class _CostMeter:
    """What a stage's training really cost on its device: the median wall-clock of a training step
    (batch, forward, backward, callbacks, optimizer; evaluation excluded) and the bytes the
    parameters and optimizer state occupy, plus the device's peak allocation on CUDA (on a CPU
    activations are not measurable from torch). A resumed stage times the steps it ran itself. On
    CUDA every 20th step is timed, behind a synchronize, so timing does not stall every step."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.every = 20 if self.cuda else 1
        self.seconds: list[float] = []
        self.t0 = None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def start(self, step: int) -> None:
        self.t0 = None
        if step % self.every == 0:
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.t0 is not None:
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.seconds.append(time.perf_counter() - self.t0)

    def summary(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        return {"step_seconds_median": statistics.median(self.seconds) if self.seconds else None,
                "steps_timed": len(self.seconds), "device": str(self.device), "threads": torch.get_num_threads(),
                "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                "optimizer_bytes": sum(t.numel() * t.element_size() for t in state),
                "peak_device_bytes": torch.cuda.max_memory_allocated(self.device) if self.cuda else None}


SPARSE_DDP = "--execution sparse runs in one process (under torchrun, use --execution masked)"


def _sparsifier(stage: Stage, model: torch.nn.Module, ckpt_path: Path):
    """What keeps the stage's masks: a Sparsifier (masked dense layers), or under --execution sparse
    a SparseExecution with the layers measured faster sparse (a resumed stage keeps the choice its
    checkpoint recorded)."""
    if stage.masks is None:
        return None
    if stage.train.execution != "sparse":
        return Sparsifier(model, stage.masks)
    ckpt = safe_torch_load(ckpt_path) if ckpt_path.exists() else None
    plan = ckpt.get("execution") if isinstance(ckpt, dict) else None
    if not isinstance(plan, dict):
        example = stage.dataset.examples(torch.arange(min(stage.batch_size, stage.dataset.num_train)))[0]
        example = example.to(stage.device)
        with numerics.autocast(stage.device, stage.train.precision):  # timed in the arithmetic that trains
            plan = choose_layers(model, stage.masks, numerics.inputs_format(example, stage.train.channels_last),
                                 lambda params: build_optimizer(params, stage.train))
    return SparseExecution(model, stage.masks, plan)


@torch.no_grad()
def _check_ranks_agree(model: torch.nn.Module, sparsifier) -> None:
    """Masks and weights must be identical on every rank; a cheap float64 fingerprint proves it.
    A diverged run's NaN weights agree too (NaN != NaN would fail torch.equal): NaN becomes -1,
    a value no sum of absolute values takes."""
    parts = [p.detach().double().abs().sum() for p in model.parameters()]
    if sparsifier:
        parts += [m.double().sum() * (i + 1) for i, m in enumerate(sparsifier.masks.values())]
    fp = torch.stack(parts).to(next(model.parameters()).device)
    fp = torch.where(fp.isnan(), torch.full_like(fp, -1.0), fp)
    low, high = fp.clone(), fp.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("ranks disagree on weights or masks at the end of a stage")


def _horizon(stage: Stage) -> int:
    return stage.schedule_end if stage.schedule_end is not None else stage.end


class _Order:
    """The training examples of each step: epoch e takes a permutation seeded by (order_seed, e)."""

    def __init__(self, stage: Stage, device):
        self.stage, self.device = stage, device
        self.epoch, self.order = -1, None

    def indices(self, step: int) -> torch.Tensor:
        s = self.stage
        epoch, i = divmod(step, s.steps_per_epoch)
        if epoch != self.epoch:
            n = s.dataset.num_train
            if s.shuffle:
                g = torch.Generator().manual_seed(derive_seed(s.order_seed, "order", epoch))
                self.order = torch.randperm(n, generator=g).to(self.device)
            else:
                self.order = torch.arange(n, device=self.device)
            self.epoch = epoch
        return self.order[i * s.batch_size:(i + 1) * s.batch_size]


class _StepBatches(torch.utils.data.Dataset):
    """Item i: this rank's share of the batch of step `start + i` of a streamed dataset, decoded
    (in a DataLoader worker) with each example's augmentation seeded by its step and position in
    the global batch, so every rank and a resumed run decode exactly what one process decodes."""

    def __init__(self, stage: Stage, start: int, rank: int, world_size: int):
        self.stage, self.start, self.rank, self.world_size = stage, start, rank, world_size
        self.order = _Order(stage, "cpu")

    def __len__(self) -> int:
        return self.stage.end - self.start

    def __getitem__(self, i: int):
        step = self.start + i
        idx = self.order.indices(step).tolist()
        share = range(self.rank, len(idx), self.world_size)
        seeds = [derive_seed(self.stage.order_seed, "augment", step, j) for j in share]
        x, y = self.stage.dataset.train_batch([idx[j] for j in share], seeds)
        return step, x, y


def _worker_threads(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not oversubscribe the cores the step uses


class _Batches:
    """Batches as a pure function of the step (see the module docstring). A streamed dataset
    (folder:) is decoded ahead by `data.workers` processes, in step order."""

    def __init__(self, stage: Stage, step: int):
        self.stage = stage
        ds = stage.dataset
        self.streamed = getattr(ds, "streamed", False)
        if self.streamed:
            source = _StepBatches(stage, step, ddp.rank(), ddp.world_size())
            workers = stage.workers
            self.loader = iter(torch.utils.data.DataLoader(
                source, batch_size=None, shuffle=False, num_workers=workers, worker_init_fn=_worker_threads,
                pin_memory=torch.device(stage.device).type == "cuda", prefetch_factor=2 if workers else None))
            return
        self.x = ds.x_train.to(stage.device)
        self.y = ds.y_train.to(stage.device)
        self.order = _Order(stage, self.x.device)

    def batch(self, step: int):
        s = self.stage
        if self.streamed:
            with _worker_errors():
                at, x, y = next(self.loader)
            assert at == step, (at, step)  # the loader runs in step order from where the stage began
            return x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
        idx = self.order.indices(step)
        x, y = s.dataset.inputs(self.x[idx]), self.y[idx]  # uint8 pixels scaled per batch
        if s.dataset.augment:  # drawn for the whole batch, so a rank's share is cropped as one process crops it
            g = torch.Generator().manual_seed(derive_seed(s.order_seed, "augment", step))
            x = augment_batch(x, s.dataset.augment, g)
        if ddp.is_distributed():  # each rank takes its share of the global batch (possibly none)
            share = slice(ddp.rank(), None, ddp.world_size())
            x, y = x[share], y[share]
        return x, y

    def global_size(self, step: int) -> int:
        """Examples in the global batch of `step` (the last batch of an epoch may be short)."""
        s = self.stage
        i = step % s.steps_per_epoch
        return min(s.batch_size, s.dataset.num_train - i * s.batch_size)


def ddp_batch_problem(model: torch.nn.Module, num_train: int, batch_size: int, world_size: int) -> str | None:
    """Why this batch size cannot train `model` on `world_size` ranks, or None. BatchNorm normalises
    with each rank's own examples (no SyncBatchNorm, see jackpot.launch.ddp): a rank with fewer than
    2 examples of a batch would raise (BatchNorm1d) or normalise with one example's statistics."""
    if world_size <= 1 or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    last = num_train - (math.ceil(num_train / batch_size) - 1) * batch_size  # the smallest batch
    if last // world_size >= 2:
        return None
    return (f"batch size {batch_size} with {num_train} training examples on {world_size} processes: the "
            f"last batch of an epoch has {last}, so some rank gets {last // world_size}, and BatchNorm needs "
            f"at least 2 per rank; choose a batch size that leaves at least {2 * world_size} in the last batch")


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device, precision: str = "fp32",
             channels_last: bool = False, inputs: Callable | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a split, in the arithmetic the model trained in. The
    sums stay on the device until the end: one host sync per split, not per batch. `inputs`:
    the dataset's map from stored examples to network inputs (Dataset.inputs)."""
    model.eval()
    device = torch.device(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for xb, yb in _eval_batches(x, y):
        xb, yb = xb.to(device), yb.to(device)
        xb = inputs(xb) if inputs is not None else xb
        with numerics.autocast(device, precision):
            out = model(numerics.inputs_format(xb, channels_last))
            loss_sum += F.cross_entropy(out.float(), yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    n = max(1, len(x))
    return float(loss_sum) / n, int(correct) / n


def _eval_batches(x, y):
    """(inputs, labels) in batches of EVAL_BATCH: slices of a tensor, or a streamed split decoded
    by two worker processes."""
    if isinstance(x, torch.Tensor):
        for i in range(0, x.shape[0], EVAL_BATCH):
            yield x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]
        return
    chunks = [range(i, min(i + EVAL_BATCH, len(x))) for i in range(0, len(x), EVAL_BATCH)]
    with _worker_errors():
        yield from torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=min(2, len(chunks)),
                                               collate_fn=x.eval_batch, worker_init_fn=_worker_threads)


@contextmanager
def _worker_errors():
    """A JackpotError raised in a DataLoader worker (an image that does not decode) as the one line
    it was, not the worker's traceback the DataLoader wraps it in."""
    try:
        yield
    except JackpotError as e:
        last = str(e).strip().splitlines()[-1]
        raise JackpotError(last.split("JackpotError: ", 1)[-1]) from None


def _evaluate(model, stage: Stage, step: int, splits: dict) -> dict:
    lr = stage.fixed_lr if stage.fixed_lr is not None else lr_at(
        max(step - 1, 0), _horizon(stage), stage.train, stage.steps_per_epoch)
    record = {"step": step, "epoch": round(step / stage.steps_per_epoch, 4), "lr": lr}
    for split, (x, y) in splits.items():
        record[f"{split}_loss"], record[f"{split}_acc"] = evaluate(model, x, y, stage.device, stage.train.precision,
                                                                   stage.train.channels_last, stage.dataset.inputs)
    return record


class _MetricsLog:
    def __init__(self, path: Path | None):
        self.path = path  # None: not the writing rank

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with writing(self.path), open(self.path, "a") as f:  # a full disk: one line, not a traceback
            f.write(json.dumps(finite_json(record), sort_keys=True) + "\n")
            f.flush()


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill; everything after it is recomputed on resume
    return rows


def _truncate_metrics(path: Path, step: int) -> None:
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _summarise(metrics_path: Path, stage: Stage, diverged: bool, sparsifier) -> dict:
    rows = read_metrics(metrics_path)
    final = rows[-1]
    key = "val_acc" if "val_acc" in final else "test_acc"
    best = max(rows, key=lambda r: r.get(key, -1.0))
    masks = sparsifier.masks if sparsifier else None
    return finite_json({"final": final, "best": best, "selection": key, "diverged": diverged,
                        "start": stage.start, "end": stage.end,
                        "density": masks.density() if masks else 1.0,
                        "nnz": masks.count() if masks else None})


def finite_json(obj):
    """`obj` with every NaN/inf float replaced by None: a diverged stage's losses become null, so
    done.json and metrics.jsonl stay standard JSON (json.dumps would write a bare NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def _progress_line(record: dict, step: int, stage: Stage, seconds: float) -> str:
    done = (step - stage.start) / max(1, stage.end - stage.start)
    eta = seconds / max(done, 1e-9) * (1 - done)
    return (f"step {step}/{stage.end}  train loss {record['train_loss']:.3f}  "
            f"test acc {100 * record['test_acc']:.1f}%  ({seconds:.0f}s, eta {eta:.0f}s)")
