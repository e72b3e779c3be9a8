"""Pruning at initialisation and random tickets: score the initial network, keep a budget, train.

--score picks what decides *which* weights survive (magnitude, random, snip, grasp, synflow, ...;
--invert keeps the lowest), --budget picks *how many* per layer: `global` ranks all scores
together (SNIP, GraSP, SynFlow as published), any other budget (uniform, erk, smart-ratio, ...)
fixes each layer's count and the score chooses positions inside it. A random ticket is
`--score random --budget smart-ratio` (Su et al. 2020). `--rounds n` re-scores n times on the
way down (iterative SynFlow uses 100), global budget only. `--structure channel` (a per-layer
budget) keeps whole output channels of each conv, ranked by their summed scores (channel pruning
at initialisation: `--execution sparse` and export then run those convs as smaller dense convs).

Run directory: init.pt, mask.pt, budget.json (target vs achieved density per layer), train/,
summary.json.
"""
from __future__ import annotations

import time

import torch

from ..config import KindSpec, RunConfig, check_density, parse_layer_map
from ..data.corrupt import check_corruption
from ..errors import JackpotError
from ..sparse import Masks
from ..sparse.distributions import BUDGETS, budget_report, check_collapse, counts_from_densities
from ..sparse.pruning import channel_count, keep_top, keep_top_channels
from ..sparse.scores import SCORES, compute_scores, init_scales, iterative_prune
from ..store import Run, atomic_write_json, safe_torch_load
from ..train import train_stage
from .context import RunContext, report_stage
from .registry import Procedure, Source, register

DATA_SCORES = ("snip", "grasp")  # sparse/scores.py: the scores that read the scoring batches


def scoring_batches(ctx: RunContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`--score-batches` batches of the mask-finding data (corrupted with --corrupt), drawn by a
    seeded permutation."""
    n = ctx.cfg.pai.score_batches * ctx.cfg.data.batch_size
    ds = ctx.finding_dataset
    idx = torch.randperm(ds.num_train, generator=ctx.generator("score-batches"))[:n]
    b = ctx.cfg.data.batch_size
    return [ds.examples(idx[i:i + b]) for i in range(0, len(idx), b)]


def score_options(ctx: RunContext, model: torch.nn.Module) -> dict:
    """Everything a score may need besides the batches: the seeded generator, the input shape and
    each layer's initial std (magnitude-init-normalized keeps dividing by it in later rounds)."""
    return {"generator": ctx.generator("score"), "input_shape": ctx.dataset.input_shape,
            "init_scale": init_scales(dict(model.named_parameters()), ctx.prunable(model))}


# A global budget's layer collapse depends on the scores. A sweep's preflight computes the mask
# (for every run, before launching any) only when that is cheap: data-free scores up to this many
# weights x rounds, one-round SNIP/SynFlow on models up to PREFLIGHT_WEIGHTS. GraSP (double
# backprop), iterative SNIP/SynFlow and larger models are checked as each run starts, still before
# its directory exists. (README "Guarantees" says so.)
DATA_FREE_SCORES = ("magnitude", "magnitude-init-normalized", "random")
PREFLIGHT_WEIGHT_ROUNDS = 50_000_000
PREFLIGHT_WEIGHTS = 5_000_000


def cheap_to_score(ctx: RunContext, model: torch.nn.Module) -> bool:
    """Whether the sweep's preflight computes this run's global-budget mask (see above)."""
    p = ctx.cfg.pai
    weights = sum(param.numel() for param in model.parameters())
    if p.score in DATA_FREE_SCORES:
        return weights * p.rounds <= PREFLIGHT_WEIGHT_ROUNDS
    return p.score in ("snip", "synflow") and p.rounds == 1 and weights <= PREFLIGHT_WEIGHTS


def check_budget(ctx: RunContext, model: torch.nn.Module) -> dict[str, float] | None:
    """The refusals of a budget a sweep's preflight makes for every run: options that do not go
    together, an impossible custom budget, a layer a fixed budget empties, and a layer a global
    budget empties when its scores are cheap (cheap_to_score). Returns the per-layer densities of
    a fixed budget, None for the global one."""
    densities = _fixed_budget(ctx, model)
    if densities is None and cheap_to_score(ctx, model):
        pai_masks(ctx, model)  # refuses a layer collapse
    return densities


def _fixed_budget(ctx: RunContext, model: torch.nn.Module) -> dict[str, float] | None:
    """The refusals that need no scores; the per-layer densities of a fixed budget, None for global."""
    p = ctx.cfg.pai
    if p.budget == "global":
        if p.min_layer_density or p.layer_densities:
            raise JackpotError("--min-layer-density and --layer-densities fix per-layer counts: use them with a "
                               "budget (uniform, erk, custom...), not --budget global")
        return None
    if p.rounds != 1:
        raise JackpotError("--rounds > 1 needs --budget global (a fixed budget fixes each layer's count)")
    names = ctx.prunable(model)
    custom = parse_layer_map(p.layer_densities, "--layer-densities") or None
    densities = ctx.layer_densities(p.budget, model, names, p.density, custom=custom,
                                    min_density=p.min_layer_density)
    params = dict(model.named_parameters())
    counts = counts_from_densities(densities, {n: params[n].shape for n in names})
    check_collapse(counts, allow=p.allow_collapse)
    if p.structure == "channel":
        convs = [n for n in names if params[n].dim() >= 3]
        if not convs:
            raise JackpotError(f"--structure channel: {ctx.cfg.model.model} has no prunable conv layer "
                               "(use --structure unstructured)")
        check_collapse({n: channel_count(counts[n], params[n].shape) for n in convs},
                       allow=p.allow_collapse, refusal="layer collapse: {layers} would keep no whole output "
                       "channel (the count is rounded to channels: raise the density, set a minimum layer "
                       "density, or allow collapse)")
    return densities


def pai_masks(ctx: RunContext, model: torch.nn.Module) -> tuple[Masks, dict]:
    """The mask a prune-at-init config gives on `model`, and its budget report. Scored on the run's
    device (a copy of the model and the batches moved there); the masks come back on the CPU."""
    p = ctx.cfg.pai
    densities = _fixed_budget(ctx, model)
    names = ctx.prunable(model)
    full = Masks.ones_for(model, names)
    opts = {**score_options(ctx, model), "invert": p.invert}
    batches = scoring_batches(ctx)
    if densities is None:
        masks = iterative_prune(p.score, model, full, batches, p.density, p.rounds, p.round_schedule,
                                scope="global", device=ctx.device, **opts)
        densities = {n: float(m.float().mean()) for n, m in masks.items()}
    else:
        counts = counts_from_densities(densities, {n: m.shape for n, m in full.items()})
        scores = compute_scores(p.score, model, full, batches, device=ctx.device, **opts)
        masks = _keep_top(ctx.cfg)(scores, full, counts)
        if p.structure == "channel":  # whole channels round each conv's count: report what was kept
            densities = {n: int(torch.count_nonzero(m)) / m.numel() for n, m in masks.items()}
    check_collapse(masks.layer_counts(), allow=p.allow_collapse)
    return masks, budget_report(model, names, densities, target=p.density)


def run_pai(cfg: RunConfig, root=None, device="cpu", progress=print, dataset=None, wait=False) -> Run:
    found = {}

    def find_mask(ctx: RunContext, model: torch.nn.Module) -> None:
        # before the run directory exists, so a layer collapse leaves nothing behind; kept for below
        if not ctx.run.stage("mask.pt").exists():
            found["mask"] = pai_masks(ctx, model)

    ctx = RunContext.open(cfg, root, device, progress, dataset, check=find_mask, wait=wait)
    total = ctx.total_steps
    with ctx.lock():
        model = ctx.new_model(("init",))
        ctx.save_once(model.state_dict(), "init.pt")
        mask_path = ctx.run.stage("mask.pt")
        masks = ctx.saved_mask(mask_path, trained_on=[ctx.run.stage("train")])  # None: missing or damaged
        if masks is None:
            masks, report = found.pop("mask", None) or pai_masks(ctx, model)  # the same mask either way
            atomic_write_json(ctx.run.stage("budget.json"), report)
            masks.save(mask_path)
        p = cfg.pai
        label = ctx.label(f"{p.score}{' (inverted)' if p.invert else ''} / {p.budget}{_structure(cfg)} "
                          f"{100 * masks.density():.1f}% weights")
        t0 = time.perf_counter()
        record = train_stage(ctx.stage("train", model, masks, 0, total, label))
        report_stage(ctx, label, record, time.perf_counter() - t0)
        atomic_write_json(ctx.run.stage("summary.json"),
                          {"density": masks.density(), "final": record["final"], "best": record["best"],
                           "layers": masks.report(), "execution": record.get("execution", {"mode": "masked"})})
        progress(f"done: {ctx.run.path}")
    return ctx.run


def label(cfg: RunConfig) -> str:
    """`snip/global`, `snip inverted/erk`: the score (inverted or not) and the budget."""
    p = cfg.pai
    return f"{p.score}{' inverted' if p.invert else ''}/{p.budget}{_structure(cfg)}"


def _keep_top(cfg: RunConfig):
    """How a per-layer count becomes a mask: whole conv channels under --structure channel."""
    return keep_top_channels if cfg.pai.structure == "channel" else keep_top


def _structure(cfg: RunConfig) -> str:
    return " channels" if cfg.pai.structure == "channel" else ""


def _branch_source(ctx: RunContext, level: int, retrain: str = "", arm: str = "ticket") -> Source:
    """The run's mask and initial weights, trained over the run's span (one mask, one training)."""
    run = ctx.run
    if not run.stage("mask.pt").exists():
        raise JackpotError(f"run {run.path.name} has no mask yet (run it first)")
    return Source(Masks.load(run.stage("mask.pt")), safe_torch_load(run.stage("init.pt"), "initial weights"),
                  0, ctx.total_steps, None)


def _inverted_mask(ctx: RunContext, level: int, ticket: Masks) -> Masks:
    """The run's score, inverted, inside each layer's count."""
    model = ctx.new_model(("init",))
    full = Masks({n: torch.ones_like(m) for n, m in ticket.items()})
    scores = compute_scores(ctx.cfg.pai.score, model, full, scoring_batches(ctx),
                            **{**score_options(ctx, model), "invert": not ctx.cfg.pai.invert})
    return _keep_top(ctx.cfg)(scores, full, ticket.layer_counts())  # whole channels stay whole


def _validate(cfg: RunConfig) -> None:
    p = cfg.pai
    if p.score not in SCORES:
        raise JackpotError(f"unknown score {p.score!r}; choose {', '.join(SCORES)}")
    if p.budget not in BUDGETS:
        raise JackpotError(f"unknown budget {p.budget!r}; choose {', '.join(BUDGETS)}")
    check_density(p.density)
    if p.rounds < 1 or p.score_batches < 1:
        raise JackpotError("--rounds and --score-batches must be at least 1")
    if not 0.0 <= p.min_layer_density <= 1.0:
        raise JackpotError(f"--min-layer-density must be in [0, 1], got {p.min_layer_density}")
    if p.structure not in ("unstructured", "channel"):
        raise JackpotError(f"unknown --structure {p.structure!r}; choose unstructured or channel")
    if p.structure == "channel" and p.budget == "global":
        raise JackpotError("--structure channel needs a per-layer budget (uniform, erk, ...): a global "
                           "ranking would compare channels of different sizes")
    check_corruption(cfg.data.corrupt, cfg.data.corrupt_fraction)


CONFIG = KindSpec(
    groups=("data", "model", "train", "masks", "pai"),
    read_when={
        "data.corrupt": lambda c: c.pai.score in DATA_SCORES,  # only scoring batches see the corrupt data
        "pai.round_schedule": lambda c: c.pai.rounds > 1,  # pai_masks, iterative_prune
        "pai.score_batches": lambda c: c.pai.score in DATA_SCORES,  # scoring_batches
    },
    validate=_validate,
)

PROCEDURE = register(Procedure(
    kind="pai", config=CONFIG,
    help="prune at initialisation (SNIP, GraSP, SynFlow, random tickets), then train",
    description="Score the initial network, keep a per-layer budget, train the sparse network. "
                "Random tickets: --score random --budget smart-ratio.",
    run=run_pai, check=check_budget, stages=lambda cfg: ["train"],
    mask_path=lambda run, level=None: run.stage("mask.pt"),
    trained_stage=lambda run, level=None, arm="": run.stage("train"),
    label=label, levels=False, target_density=lambda cfg: cfg.pai.density,
    family=lambda cfg: f"{cfg.pai.score}/{cfg.pai.budget}{_structure(cfg)}",
    branch_source=_branch_source, inverted_mask=_inverted_mask))
