"""What every procedure needs: the loaded data, seeded model construction, the prunable set,
step arithmetic and a one-line progress label. Procedures compose these with the engine."""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..config import (RunConfig, derive_seed, kind_spec, parse_checkpoint_every, parse_step, split_list, to_dict,
                      validate)
from ..data import load_configured
from ..data.corrupt import corrupt
from ..data.dataset import Dataset
from ..errors import JackpotError
from ..models import create_model, is_vgg
from ..sparse import Masks, distributions, prunable_names
from ..store import Run, atomic_torch_save, atomic_write_json, check_threads, stage_done
from ..launch import ddp
from ..train import Stage, live_log, numerics
from ..train.loop import ddp_batch_problem
from .registry import finished_state


@dataclass
class RunContext:
    cfg: RunConfig
    run: Run
    dataset: Dataset
    device: torch.device
    progress: Callable[[str], None]
    wait: bool = False  # lock(): wait for another process computing the run instead of refusing
    recorded: RunConfig | None = None  # what lock() writes to config.json (cfg may be changed meanwhile)

    @classmethod
    def open(cls, cfg: RunConfig, root=None, device="cpu", progress: Callable[[str], None] = print,
             dataset: Dataset | None = None, check: Callable | None = None, wait: bool = False) -> "RunContext":
        """prepare(), then create the run directory: bad input leaves no run directory. Its records
        (config.json, dataset.json) are written by lock(), once the lock is held."""
        ctx = cls.prepare(cfg, root, device, progress, dataset, check)
        ctx.wait, ctx.recorded = wait, cfg
        _refuse_another_thread_count(ctx)
        ctx.run = Run.create(cfg, root)
        return ctx

    @classmethod
    def prepare(cls, cfg: RunConfig, root=None, device="cpu", progress: Callable[[str], None] = print,
                dataset: Dataset | None = None, check: Callable | None = None) -> "RunContext":
        """Validate, load the data, build the model once and run the procedure's own `check(ctx,
        model)`, writing nothing: every refusal the config allows happens here (a sweep's preflight
        calls it for every run). ctx.run names the run's directory, which may not exist yet."""
        cfg = validate(cfg)
        if dataset is None:
            dataset = load_configured(cfg.data, derive_seed(cfg.seed, "validation-split"))
        if cfg.data.corrupt and dataset.streamed:
            raise JackpotError(f"--corrupt needs a dataset held in memory, not the streamed {cfg.data.dataset}")
        ctx = cls(cfg, None, dataset, torch.device(device), progress)
        model = ctx.new_model(("init",))  # refuse a model/data mismatch
        ctx.total_steps  # refuse a zero-length training
        ctx.prunable(model)  # refuse --keep-layers naming missing layers
        ctx.checkpoint_cadence  # refuse a bad --checkpoint-every
        live_log.require(cfg.train.log)  # a live logger that is not installed
        numerics.check_compile(cfg.train.compile)
        shares = ddp_batch_problem(model, dataset.num_train, cfg.data.batch_size, ddp.world_size())
        if shares:  # BatchNorm with fewer than 2 examples on some rank (jackpot.launch.ddp)
            raise JackpotError(shares)
        ctx.run = Run(Run.path_for(cfg, root))
        _refuse_changed_data(ctx.run.path, dataset, cfg.data.dataset)
        if check:
            check(ctx, model)
        return ctx

    @contextmanager
    def lock(self):
        """The run's lock (see Run.lock), waiting for another process when the context says so;
        once it is held, the run's records: a command refused as busy rewrites neither."""
        with self.run.lock(wait=self.wait, progress=self.progress):
            self.run.record_config(self.recorded or self.cfg, self.device)
            write_dataset_record(self.run.path, self.dataset)
            yield self.run

    @classmethod
    def attach(cls, run: Run, device="cpu", progress: Callable[[str], None] = print,
               cfg: RunConfig | None = None) -> "RunContext":
        """A context for an existing run directory (or a branch's, with its own `cfg`)."""
        cfg = validate(cfg or run.config())
        dataset = load_configured(cfg.data, derive_seed(cfg.seed, "validation-split"))
        return cls(cfg, run, dataset, torch.device(device), progress)

    @property
    def finding_dataset(self) -> Dataset:
        """The data masks are found on: the training data, corrupted when --corrupt asks."""
        d = self.cfg.data
        if not d.corrupt:
            return self.dataset
        if not hasattr(self, "_finding"):
            fraction = d.corrupt_fraction if d.corrupt_fraction is not None else (
                0.5 if d.corrupt == "half" else 1.0)
            self._finding = corrupt(self.dataset, d.corrupt, fraction, self.generator("corrupt", d.corrupt))
        return self._finding

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset.num_train / self.cfg.data.batch_size)

    def steps(self, text: str) -> int:
        return parse_step(text, self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        total = self.steps(self.cfg.train.duration)
        if total <= 0:
            raise JackpotError(f"--duration {self.cfg.train.duration} is zero steps")
        return total

    def train_in_steps(self):
        """The training config with every step string in iterations of the *clean* data's epochs,
        so a stage on fewer examples (--corrupt half) keeps the same LR schedule and length."""
        t = self.cfg.train
        it = lambda text: f"{self.steps(text)}it"
        return replace(t, duration=it(t.duration), warmup=it(t.warmup),
                       milestones=",".join(it(m) for m in split_list(t.milestones)))

    def new_model(self, seed_tag: tuple, width: float = 1.0) -> torch.nn.Module:
        """A freshly initialised model; the same tag always gives the same weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, *seed_tag))
            m = self.cfg.model
            return create_model(m.model, self.dataset.input_shape, self.dataset.num_classes, width=width,
                                init=m.init, bn_init=m.bn_init)

    def generator(self, *tags) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.cfg.seed, *tags))

    def prunable(self, model: torch.nn.Module) -> list[str]:
        m = self.cfg.masks
        return prunable_names(model, m.keep_first, m.keep_output, split_list(m.keep_layers), m.include_bias)

    def layer_densities(self, budget: str, model: torch.nn.Module, names: list[str], density: float, **kw):
        """Per-layer densities of a budget; smart ratio divides by l^2 for VGG-style nets (Su et al.)."""
        return distributions.layer_densities(budget, model, names, density, vgg_style=is_vgg(self.cfg.model.model), **kw)

    @property
    def checkpoint_cadence(self) -> tuple[int, float]:
        """(steps, seconds) between checkpoints from --checkpoint-every; (0, 0): every epoch."""
        return parse_checkpoint_every(self.cfg.train.checkpoint_every, self.steps_per_epoch)

    def save_once(self, obj, name: str) -> Path:
        path = self.run.stage(name)
        if not path.exists():
            atomic_torch_save(obj, path)
        return path

    def saved_mask(self, path: Path, trained_on: list[Path]) -> Masks | None:
        """The mask saved at `path`, or None when it is to be computed: missing, or damaged (it does
        not load) while no stage of `trained_on` has finished. A damaged mask that a finished stage
        was trained on is one line: recomputing it alone would leave that stage stale."""
        if not path.exists():
            return None
        try:
            return Masks.load(path)
        except JackpotError as e:
            why = str(e).split(";")[0]
            finished = [str(Path(s).relative_to(self.run.path)) for s in trained_on if stage_done(s)]
            if finished:
                one = len(finished) == 1
                raise JackpotError(f"{why}, and {', '.join(finished)} {'was' if one else 'were'} trained on it: move "
                                   f"{'that stage' if one else 'those stages'} away and re-run to recompute the "
                                   f"mask and {'it' if one else 'them'}") from None
            print(f"jackpot: warning: {why}; recomputing it", file=sys.stderr)
            return None

    def stage(self, rel: str, model: torch.nn.Module, masks: Masks | None, start: int, end: int,
              label: str, finding: bool = False, order_seed: int | None = None, **kw) -> Stage:
        """A training stage on the clean data, or on the mask-finding data when `finding`."""
        data = self.finding_dataset if finding else self.dataset
        order = derive_seed(self.cfg.seed, "data-order") if order_seed is None else order_seed
        kw.setdefault("checkpoint_every", self.checkpoint_cadence[0])
        kw.setdefault("checkpoint_seconds", self.checkpoint_cadence[1])
        return Stage(dir=self.run.stage(rel), model=model, dataset=data, train=self.train_in_steps(),
                     batch_size=self.cfg.data.batch_size, order_seed=order,
                     start=start, end=end, masks=masks, device=self.device, shuffle=self.cfg.data.shuffle,
                     progress=throttled(self.progress, label), label=label, hparams=self.hparams,
                     name=f"{self.run.path.name}/{rel}", workers=self.cfg.data.loader_workers, **kw)

    @property
    def hparams(self) -> dict:
        """Every setting of the groups the run's kind reads, as flat `group.field` scalars (what live
        loggers record once; None becomes "none")."""
        flat = {"kind": self.cfg.kind, "seed": self.cfg.seed}
        full = to_dict(self.cfg)
        for group in kind_spec(self.cfg.kind).groups:
            flat.update({f"{group}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v).lower()
                         for k, v in full[group].items()})
        return flat

    def label(self, text: str) -> str:
        return f"[seed {self.cfg.seed}] {text}"


DATASET_RECORD = "dataset.json"  # the input shape and class count export/bench rebuild the model with


def dataset_record_problem(run_dir: str | Path) -> str | None:
    """Why a run's dataset.json cannot be used, or None when it can."""
    try:
        rec = json.loads((Path(run_dir) / DATASET_RECORD).read_text())
    except FileNotFoundError:
        return "it is missing"
    except (OSError, ValueError):
        return "it is unreadable"
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
    if not isinstance(rec, dict):
        return "it holds no record"
    shape = rec.get("input_shape")
    if not (isinstance(shape, list) and shape and all(map(positive, shape))):
        return "no input_shape of positive integers"
    if not positive(rec.get("num_classes")):
        return "no positive num_classes"
    return None


def write_dataset_record(run_dir: str | Path, dataset) -> None:
    """The dataset record of a run (or branch) directory, when missing or damaged."""
    if dataset_record_problem(run_dir):
        atomic_write_json(Path(run_dir) / DATASET_RECORD, {
            "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes,
            "num_train": dataset.num_train, "num_test": dataset.num_test})


def _refuse_changed_data(run_dir: Path, dataset, name: str) -> None:
    """A run begun on other data (an npz file or folder rewritten since) is not continued or shown
    as if it were this data's: its recorded shape and counts must still hold."""
    if dataset_record_problem(run_dir):  # no run yet, or a record a re-run rewrites
        return
    recorded = json.loads((Path(run_dir) / DATASET_RECORD).read_text())
    now = {"input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes,
           "num_train": dataset.num_train, "num_test": dataset.num_test}
    changed = [f"{k} {recorded[k]} -> {v}" for k, v in now.items() if k in recorded and recorded[k] != v]
    if changed:
        raise JackpotError(f"the data of {name} changed since run {Path(run_dir).name} was made "
                           f"({', '.join(changed)}): restore it, or move the run away to compute it anew")


def read_dataset_record(run_dir: str | Path) -> dict:
    """A run's dataset.json; a missing or damaged one is one line (re-running the run rewrites it)."""
    problem = dataset_record_problem(run_dir)
    if problem:
        raise JackpotError(f"damaged dataset shape record {Path(run_dir) / DATASET_RECORD} ({problem}): re-run "
                           "the run's command to rewrite it")
    return json.loads((Path(run_dir) / DATASET_RECORD).read_text())


def _refuse_another_thread_count(ctx: RunContext) -> None:
    """A run with something left to compute (resumed, or extended by --levels) continues under the
    thread count it was begun with (store.check_threads); a finished one just shows its results."""
    path = ctx.run.path
    if (path / "config.json").exists() and finished_state(path, ctx.cfg) is None:
        check_threads(path, device=ctx.device)


def throttled(progress: Callable[[str], None], label: str, every: float = 10.0) -> Callable[[str], None]:
    """Per-epoch lines for long stages only: at most one every `every` seconds."""
    last = [time.perf_counter()]

    def show(line: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            progress(f"{label}  {line}")
    return show


def report_stage(ctx: RunContext, label: str, record: dict, seconds: float) -> None:
    ctx.progress(f"{label}  test acc {100 * record['final']['test_acc']:.1f}%  ({seconds:.1f}s)")

