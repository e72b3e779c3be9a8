"""Frozen hyperparameter groups, their canonical form and the run hash.

Rule (pinned by tests/test_config.py): a field's canonical form lists only values that differ from
the default, so a new option whose default is a no-op leaves every earlier run hash unchanged.
Fields marked `hashed=False` (paths, level counts) never enter the hash: they do not change what a
run computes, only where or how far. Nor does a setting the run does not read (READ_WHEN: e.g.
--delta-t of a static mask); config.json still records every field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import JackpotError, check_fraction

HASH_LENGTH = 12


def option(default: Any, help: str, hashed: bool = True, choices: tuple | None = None):
    """A dataclass field with help text for the CLI and a flag saying whether it is hashed."""
    return field(default=default, metadata={"help": help, "hashed": hashed, "choices": choices})


def scalar_type(annotation) -> tuple[type, bool]:
    """A config field's value type and whether it may be None, read from its annotation, which is
    text here (postponed annotations): "float | None" -> (float, True). The CLI's flags and the
    sweep grid's values both convert through it."""
    text = str(annotation)
    base = text.replace("| None", "").strip()
    return {"int": int, "float": float, "str": str, "bool": bool}[base], "None" in text


@dataclass(frozen=True)
class DataConfig:
    dataset: str = option("mnist1d", "dataset name (see `jackpot datasets`), npz:PATH or folder:PATH")
    data_root: str | None = option(None, "directory holding downloaded datasets", hashed=False)
    val_size: int = option(0, "examples carved from the training data for validation")
    batch_size: int = option(100, "training batch size")
    corrupt: str = option("", "sanity check of lottery and pai (sparse refuses it): corrupt the "
                          "mask-finding data (random-labels, random-pixels, half); the ticket then "
                          "trains on clean data")
    corrupt_fraction: float | None = option(None, "random-labels: fraction of labels redrawn (default 1); "
                                            "half: fraction of examples kept (default 0.5)")
    shuffle: bool = option(True, "reshuffle the training data every epoch (--no-shuffle: batches in the "
                           "stored order, as the MNIST-1D notebook)")
    standardize: bool = option(True, "standardise inputs with training-split statistics (--no-standardize: "
                               "raw values, as the MNIST-1D notebook)")
    image_size: int = option(224, "folder: datasets: side of the square crops the network sees (ImageNet: 224)")
    loader_workers: int = option(2, "folder: datasets: processes decoding images ahead of training (0: none)",
                                 hashed=False)


@dataclass(frozen=True)
class ModelConfig:
    model: str = option("mnist1d-mlp", "model name (see `jackpot models`)")
    init: str = option("default", "weight initialisation of conv/linear layers: default (the architecture's "
                       "own: PyTorch's, or kaiming-normal for the ResNets/WRN), "
                       "kaiming-normal (OpenLTH), kaiming-uniform, xavier-normal (LTH paper's Gaussian "
                       "Glorot), xavier-uniform", choices=("default", "kaiming-normal", "kaiming-uniform",
                                                           "xavier-normal", "xavier-uniform"))
    bn_init: str = option("default", "BatchNorm initialisation (OpenLTH's batchnorm_init): default/fixed "
                          "(weight 1), uniform (weight U(0,1); OpenLTH's default), oneone, positivenegative",
                          choices=("default", "fixed", "uniform", "oneone", "positivenegative"))


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = option("adam", "sgd, adam or adamw", choices=("sgd", "adam", "adamw"))
    lr: float = option(2e-3, "peak learning rate")
    momentum: float = option(0.0, "SGD momentum")
    nesterov: bool = option(False, "Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, "weight decay (decoupled for adamw)")
    duration: str = option("20ep", "training length: 20ep, 500it or 2ep10it")
    schedule: str = option("constant", "constant, step or cosine", choices=("constant", "step", "cosine"))
    milestones: str = option("", "step schedule: comma-separated steps, e.g. 80ep,120ep")
    gamma: float = option(0.1, "step schedule: factor at each milestone")
    warmup: str = option("0it", "linear warm-up length")
    checkpoint_every: str = option("", "how often a resumable checkpoint is saved: steps (500it, 1ep) or "
                                   "time (30s, 10min, 1h); default: every epoch", hashed=False)
    # train/numerics.py says what each of these guarantees
    precision: str = option("fp32", "arithmetic: fp32 (TF32 off), tf32 (TF32 matmuls on GPUs), bf16 (autocast) or "
                            "fp16 (autocast + grad scaler); weights, optimizer state and masks stay float32",
                            choices=("fp32", "tf32", "bf16", "fp16"))
    channels_last: bool = option(False, "convnets in channels_last memory format (faster convolutions on GPUs)")
    compile: str = option("none", "torch.compile the forward with this backend (inductor, aot_eager, ...); "
                          "none: eager")
    deterministic: bool = option(True, "CUDA: deterministic kernels, no cuDNN benchmarking (CPU runs are "
                                 "deterministic for a fixed thread count either way)", hashed=False)
    denormals: str = option("keep", "CPU subnormal floats: keep (IEEE arithmetic, PyTorch's default) or flush "
                            "(to zero, TensorFlow's CPU default): near-zero training losses make sparse kernels "
                            "meet subnormals and slow 2-3x; hashed (results differ below ~1e-38)",
                            choices=("keep", "flush"))
    execution: str = option("masked", "masked: masked dense layers; sparse: each masked Linear stores and "
                            "trains only its active weights, and each conv whose mask empties whole channels "
                            "runs as the smaller dense conv, where measured faster (sparse/execution.py); "
                            "hashed: equal to masked only within float tolerance", choices=("masked", "sparse"))
    log: str = option("", "live logging while training: tensorboard and/or wandb (offline), comma-separated",
                      hashed=False)


@dataclass(frozen=True)
class MaskConfig:
    """Which parameters masks cover (every procedure)."""

    keep_first: bool = option(False, "keep the first layer dense")
    keep_output: bool = option(False, "keep the output layer dense")
    keep_layers: str = option("", "comma-separated module names kept dense")
    include_bias: bool = option(False, "prune biases too")


@dataclass(frozen=True)
class PruneConfig:
    """Iterative magnitude pruning (lottery)."""

    fraction: float = option(0.2, "fraction of the remaining prunable weights removed per level")
    scope: str = option("layerwise", "layerwise, global, or layerwise-joint (a layer's weight and bias "
                        "ranked together, as the MNIST-1D notebook; needs --include-bias)",
                        choices=("layerwise", "global", "layerwise-joint"))
    prune_schedule: str = option("geometric", "geometric: remove --fraction of the remaining weights per "
                                 "level; linear: level L has sparsity L x --fraction of each layer's full "
                                 "size (the MNIST-1D notebook's linspace)", choices=("geometric", "linear"))
    rounding: str = option("nearest", "pruned count per level: nearest (keep round(d n)), floor-drop (drop "
                           "int(p n), the MNIST-1D notebook), ceil-drop (drop ceil(p n)) or openlth (OpenLTH's "
                           "sparse_global exactly: ceil(p R) + 1, R counting the layers kept dense too)",
                           choices=("nearest", "floor-drop", "ceil-drop", "openlth"))
    rank_at: str = option("", "rank weights by their magnitude at this step of each level's training "
                          "(e.g. 1001it, the notebook's step-1000 checkpoint); default: the end")
    output_fraction: float | None = option(
        None, "pruning fraction of the output layer (LTH: half the rate); default: same as --fraction")
    layer_fractions: str = option("", "per-layer overrides: name=fraction,name=fraction")
    score: str = option("magnitude", "magnitude, or magnitude-init-normalized (|w| / the layer's init std, so "
                        "global pruning does not favour layers with small weights)",
                        choices=("magnitude", "magnitude-init-normalized"))


@dataclass(frozen=True)
class LotteryConfig:
    rewind: str = option("0it", "rewind point: 0it (initialisation) or a step like 1ep, 500it")
    controls: str = option("reinit,random", "control arms trained at every level")
    random_init: str = option("ticket", "start weights of the random-mask arm: ticket (the ticket's own) or "
                              "own (its own initialisation, fixed over levels, as the MNIST-1D notebook's "
                              "random trial)", choices=("ticket", "own"))
    retrain: str = option("rewind", "after pruning: rewind (weights to the rewind point), lr-rewind "
                          "(keep trained weights, replay the LR schedule from the rewind point) or finetune "
                          "(keep trained weights, train at the final LR)",
                          choices=("rewind", "lr-rewind", "finetune"))
    budget: str = option("", "per-layer counts from a budget (e.g. smart-ratio: hybrid tickets) instead of "
                         "--scope; positions still by magnitude")
    levels: int = option(5, "pruning levels after the dense level 0", hashed=False)


@dataclass(frozen=True)
class PaiConfig:
    score: str = option("snip", "pruning score at initialisation: magnitude, magnitude-init-normalized, "
                        "random, snip, grasp, synflow")
    budget: str = option("global", "per-layer densities: global (from scores), uniform, "
                         "uniform-first-dense, er, erk, smart-ratio, custom")
    density: float = option(0.1, "fraction of prunable weights kept")
    rounds: int = option(1, "scoring rounds (iterative pruning; SynFlow paper: 100)")
    round_schedule: str = option("exponential", "density per round: exponential or linear",
                                 choices=("exponential", "linear"))
    invert: bool = option(False, "keep the lowest scores instead of the highest")
    score_batches: int = option(1, "training batches used to compute data-dependent scores")
    layer_densities: str = option("", "custom budget: name=density,name=density")
    min_layer_density: float = option(0.0, "raise every layer to at least this density")
    allow_collapse: bool = option(False, "allow a layer to be pruned to zero weights")
    structure: str = option("unstructured", "unstructured: any weights; channel: each conv keeps whole output "
                            "channels (the budget's count rounded to channels, ranked by summed scores), "
                            "other layers stay unstructured", choices=("unstructured", "channel"))


@dataclass(frozen=True)
class SparseConfig:
    method: str = option("rigl", "dense, static, set, rigl, snfs, dsr, gmp or small-dense")
    density: float = option(0.1, "fraction of prunable weights kept (final density for gmp)")
    distribution: str = option("erk", "initial per-layer densities: uniform, uniform-first-dense, er, erk")
    delta_t: int = option(100, "steps between mask updates")
    alpha: float = option(0.3, "initial drop fraction")
    drop_schedule: str = option("cosine", "drop fraction over time: cosine, constant or inverse-power",
                                choices=("cosine", "constant", "inverse-power"))
    t_end: float = option(0.75, "fraction of training after which the mask stops changing")
    grow_init: str = option("zero", "value of grown weights: zero or init (fresh draw of the layer's init)")
    skip_step: bool = option(False, "skip the optimizer step on mask-update steps")
    grad_accumulation: int = option(1, "batches whose dense gradients are summed for RigL's grow score")
    gmp_start: float = option(0.0, "gmp: fraction of training where pruning starts")
    gmp_end: float = option(0.75, "gmp: fraction of training where the final density is reached")
    extend: float = option(1.0, "train N times longer (RigL 2x/5x; schedule milestones scale too)")


@dataclass(frozen=True)
class RunConfig:
    """Everything a lottery run computes from. `kind` names the procedure."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    masks: MaskConfig = MaskConfig()
    prune: PruneConfig = PruneConfig()
    lottery: LotteryConfig = LotteryConfig()
    pai: PaiConfig = PaiConfig()
    sparse: SparseConfig = SparseConfig()
    kind: str = "lottery"
    seed: int = 0  # every random act of the run derives its seed from this one

    def groups(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GROUPS}


GROUPS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "masks": MaskConfig,
          "prune": PruneConfig,
          "lottery": LotteryConfig, "pai": PaiConfig, "sparse": SparseConfig}


@dataclass(frozen=True)
class KindSpec:
    """What the config layer must know of one procedure kind to validate and hash its runs. Each
    procedure module declares its own (jackpot.procedures.registry.register passes it here), so
    this floor names no kind itself.

    groups: the config groups the procedure reads (the others never enter its hash);
    read_when: "group" or "group.field" -> predicate(cfg): narrows what a run of this kind reads
        (see READ_WHEN below);
    validate: cfg -> None, raising JackpotError on settings this kind cannot run;
    never_lower: "group.field" settings whose recorded value a re-run may raise, never lower
        (computed work, like lottery levels, is counted against the record)."""

    groups: tuple[str, ...]
    read_when: dict = field(default_factory=dict)
    validate: Any = None
    never_lower: tuple[str, ...] = ()


_KINDS: dict[str, KindSpec] = {}


def register_kind(kind: str, spec: KindSpec) -> None:
    unknown = set(spec.groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"kind {kind!r} names unknown config groups {sorted(unknown)}")
    _KINDS[kind] = spec


def kind_spec(kind: str) -> KindSpec:
    spec = _KINDS.get(kind)
    if spec is None:
        raise JackpotError(f"unknown procedure kind {kind!r}; choose {', '.join(_KINDS)}")
    return spec


def kind_groups() -> dict[str, tuple[str, ...]]:
    """Every registered kind and the config groups it reads (its command's flags)."""
    return {kind: spec.groups for kind, spec in _KINDS.items()}


# --- which settings a run reads ----------------------------------------------------------------
# A setting enters the run hash only when the run reads it: --delta-t does nothing to a static
# mask, --momentum nothing to Adam, so giving one must not split one computation into two runs.
# A group enters only for the kinds whose KindSpec lists it; READ_WHEN (for every kind) and each
# kind's own read_when narrow a whole group ("masks") or one field ("group.field") to the configs
# that read it; a field not listed is read whenever its group is. Each entry says where it is
# read. Declaring a field unread that some code does read would merge two different
# computations: list one only after reading every use of it.
READ_WHEN: dict[str, Any] = {
    "data.image_size": lambda c: c.data.dataset.startswith("folder:"),  # data/folder.py
    "data.standardize": lambda c: not c.data.dataset.startswith("folder:"),  # folders: ImageNet statistics
    "data.corrupt_fraction": lambda c: c.data.corrupt in ("random-labels", "half") and reads(c, "data.corrupt"),
    "train.momentum": lambda c: c.train.optimizer == "sgd",  # train/optim.py build_optimizer
    "train.nesterov": lambda c: c.train.optimizer == "sgd",
    "train.milestones": lambda c: c.train.schedule == "step",  # train/optim.py lr_at
    "train.gamma": lambda c: c.train.schedule == "step",
}


# Values that compute exactly what the default computes (OpenLTH's "fixed" BatchNorm init is
# PyTorch's own): they hash as the default.
SAME_AS_DEFAULT: dict[str, dict] = {"model.bn_init": {"fixed": "default"}}


def _in_default_order(default: str):
    """A list setting whose order and repeats do not matter: its names once each, in the default's order."""
    return lambda text: ",".join(n for n in split_list(default) if n in split_list(text))


# list settings hashed in one spelling: --controls random,reinit,random is --controls reinit,random
CANONICAL_SPELLING = {"lottery.controls": _in_default_order(LotteryConfig.controls)}


def reads(cfg: "RunConfig", address: str) -> bool:
    """Whether a run of `cfg` reads the setting `group.field` (or any of `group`)."""
    group = address.partition(".")[0]
    spec = kind_spec(cfg.kind)
    if group not in spec.groups:
        return False
    return all(table.get(key, lambda _c: True)(cfg) for key in {group, address} for table in (READ_WHEN, spec.read_when))


def to_dict(cfg: RunConfig) -> dict:
    """The full resolved config (every field), as written into run directories."""
    return {"kind": cfg.kind, "seed": cfg.seed,
            **{name: dataclasses.asdict(g) for name, g in cfg.groups().items()}}


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _group_from_dict(name: str, cls, values) -> Any:
    """One config group from its stored dict; a wrong name or type is one clear JackpotError."""
    if not isinstance(values, dict):
        raise JackpotError(f"config group {name!r} must be a mapping of settings, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise JackpotError(f"config does not match this version of jackpot: {name} has no setting "
                           f"{', '.join(map(str, unknown))}")
    for key, value in values.items():
        base, _, rest = known[key].type.partition(" | ")
        types = _TYPES.get(base)
        if types is None or (value is None and rest == "None"):
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and base != "bool"):
            raise JackpotError(f"config setting {name}.{key} must be {known[key].type}, got {value!r}")
    return cls(**values)


def from_dict(d: dict) -> RunConfig:
    """The config written by to_dict (settings missing from `d` take their defaults)."""
    if not isinstance(d, dict):
        raise JackpotError(f"a config must be a mapping of groups, got {type(d).__name__}")
    groups = {name: _group_from_dict(name, cls, d.get(name, {})) for name, cls in GROUPS.items()}
    kind, seed = d.get("kind", RunConfig.kind), d.get("seed", 0)
    if kind not in _KINDS or not isinstance(seed, int) or isinstance(seed, bool):
        raise JackpotError(f"config kind must be one of {', '.join(_KINDS)} and seed an integer, "
                           f"got {kind!r} and {seed!r}")
    return RunConfig(kind=kind, seed=seed, **groups)


def canonical(cfg: RunConfig, unread: bool = False) -> dict:
    """Hashed fields that differ from their default, grouped; the input of the run hash. Only the
    fields the run reads (see READ_WHEN) unless `unread`, which tells apart configs that differ only
    in settings their run ignores."""
    kind_spec(cfg.kind)  # an unknown kind is refused, never hashed
    out: dict = {"kind": cfg.kind}
    if cfg.seed != 0:
        out["seed"] = cfg.seed
    for name, group in cfg.groups().items():
        diff = {}
        for f in fields(group):
            value = getattr(group, f.name)
            value = CANONICAL_SPELLING.get(f"{name}.{f.name}", lambda v: v)(value)
            value = SAME_AS_DEFAULT.get(f"{name}.{f.name}", {}).get(value, value)
            if f.metadata.get("hashed", True) and value != f.default and (unread or reads(cfg, f"{name}.{f.name}")):
                # 2 and 2.0 are the same setting: float fields always hash as floats
                diff[f.name] = float(value) if f.type.startswith("float") and value is not None else value
        if diff:
            out[name] = diff
    if cfg.data.corrupt in ("random-labels", "random-pixels") and reads(cfg, "data.corrupt"):
        # labels were once moved to a *different* class; runs of that rule must not be reused now
        # that they are drawn over all classes (data/corrupt.py), so the rule enters the hash
        out.setdefault("data", {})["label_rule"] = "uniform-all-classes"
    return out


def same_hashed(a, b) -> bool:
    """Two instances of one config group agree on every hashed field (unhashed ones, like
    checkpoint cadence or paths, change where or how often, not what is computed)."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(a) if f.metadata.get("hashed", True))


def run_hash(cfg: RunConfig) -> str:
    text = json.dumps(canonical(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def derive_seed(seed: int, *tags: Any) -> int:
    """An independent 63-bit seed for one random act, e.g. derive_seed(seed, "init")."""
    text = json.dumps([seed, *tags], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# --- validation -----------------------------------------------------------------------------

_STEP_RE = re.compile(r"^(?:(\d+)ep)?(?:(\d+)it)?$")


def parse_step(text: str, steps_per_epoch: int) -> int:
    """'2ep10it' -> 2 * steps_per_epoch + 10. Raises JackpotError on anything else."""
    m = _STEP_RE.match(text.strip()) if text else None
    if not m or (m.group(1) is None and m.group(2) is None):
        raise JackpotError(f"bad step {text!r}: write e.g. 20ep, 500it or 2ep10it")
    return int(m.group(1) or 0) * steps_per_epoch + int(m.group(2) or 0)


_SECONDS = {"s": 1, "min": 60, "h": 3600}
_TIME_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|min|h)$")


def parse_checkpoint_every(text: str, steps_per_epoch: int) -> tuple[int, float]:
    """--checkpoint-every as (steps, seconds), one of them 0; ('', ...) -> (0, 0): every epoch."""
    if not text:
        return 0, 0.0
    m = _TIME_RE.match(text.strip())
    try:
        steps, seconds = (0, float(m.group(1)) * _SECONDS[m.group(2)]) if m else (parse_step(text, steps_per_epoch), 0.0)
    except JackpotError:
        steps, seconds = 0, 0.0
    if steps <= 0 and seconds <= 0:
        raise JackpotError(f"bad --checkpoint-every {text!r}: give steps (500it, 1ep) or a time (30s, 10min, 1h)")
    return steps, seconds


def parse_layer_map(text: str, what: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if name.strip() in out:  # the last would silently win
            raise JackpotError(f"{what} names {name.strip()} twice")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise JackpotError(f"bad {what} entry {item!r}: write name=value")
    return out


def split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def validate(cfg: RunConfig) -> RunConfig:
    """Refuse impossible settings with one clear line, before anything is computed: the training
    and data settings every kind reads here, the rest by the kind's own `validate`."""
    t, d = cfg.train, cfg.data
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise JackpotError(f"--lr must be a positive number, got {t.lr}")
    if not (math.isfinite(t.weight_decay) and t.weight_decay >= 0):
        raise JackpotError(f"--weight-decay must be >= 0, got {t.weight_decay}")
    if not 0.0 <= t.momentum < 1.0:
        raise JackpotError(f"--momentum must be in [0, 1), got {t.momentum}")
    if not (math.isfinite(t.gamma) and t.gamma > 0):
        raise JackpotError(f"--gamma must be a positive number, got {t.gamma}")
    if d.batch_size <= 0:
        raise JackpotError(f"--batch-size must be positive, got {d.batch_size}")
    if d.val_size < 0:
        raise JackpotError(f"--val-size must be >= 0, got {d.val_size}")
    if d.loader_workers < 0:
        raise JackpotError(f"--loader-workers must be >= 0, got {d.loader_workers}")
    for step in (t.duration, t.warmup, *split_list(t.milestones)):
        parse_step(step, 1)
    parse_checkpoint_every(t.checkpoint_every, 1)
    if t.execution not in ("masked", "sparse"):
        raise JackpotError(f"unknown --execution {t.execution!r}; choose masked or sparse")
    if t.execution == "sparse" and t.precision == "fp16":  # the scaler unscales the optimizer's grads only
        raise JackpotError("--execution sparse does not run with --precision fp16 (the dense gradients a mask "
                           "update reads would stay loss-scaled); use bf16 or fp32")
    spec = kind_spec(cfg.kind)
    if spec.validate is not None:
        spec.validate(cfg)
    return cfg


def check_density(value: float) -> None:
    check_fraction(value, "--density", " (fraction of weights kept)")
