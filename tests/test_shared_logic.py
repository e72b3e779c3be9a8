"""Rules that used to be written more than once (issue 13), now one implementation each: top-k
selection, random-mask drawing, the prunable layer types, the density range check, field
annotations, mean ± std, the layer-collapse refusal, init-normalised magnitude, "is this a VGG"."""
import argparse
import math
import statistics
from dataclasses import replace

import pytest
import torch
from torch import nn

from jackpot.analysis.inspect import inspect_budget
from jackpot.analysis.stats import mean_std
from jackpot.cli import add_config_flags
from jackpot.config import (DataConfig, LotteryConfig, ModelConfig, PaiConfig, PruneConfig, RunConfig, TrainConfig,
                            scalar_type, validate)
from jackpot.errors import JackpotError, check_fraction
from jackpot.flops import layer_flops
from jackpot.launch.grid import parse_grid
from jackpot.models import create_model, first_layer_name, is_vgg, list_models, model_info, registry
from jackpot.models.init import apply_init
from jackpot.procedures.lottery import run_lottery
from jackpot.sparse import Masks, keep_count, prunable_names
from jackpot.sparse.distributions import layer_densities, random_masks
from jackpot.sparse.gmp import GradualMagnitude
from jackpot.sparse.masks import random_positions, top_k
from jackpot.sparse.scores import init_scales, iterative_prune, magnitude_init_normalized


def quiet(_):
    pass


# --- top-k ----------------------------------------------------------------------------------------

def test_top_k_index_rule_keeps_the_earliest_of_equal_scores():
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0, 2.0])
    assert top_k(scores, 2).tolist() == [False, True, True, False, False, False]
    assert top_k(scores, 4).tolist() == [False, True, True, False, True, True]
    assert not top_k(scores, 0).any() and top_k(scores, 9).all()


@pytest.mark.parametrize("ties", ["index", "topk"])
def test_top_k_picks_only_allowed_positions(ties):
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0, 2.0])
    allowed = torch.tensor([True, False, True, True, True, False])
    assert top_k(scores, 2, allowed, ties=ties).tolist() == [False, False, True, False, True, False]
    assert torch.equal(top_k(scores, 5, allowed, ties=ties), allowed)  # fewer allowed than k: all of them
    # few allowed positions (the active weights of a sparse layer): only those are scored
    big, few = torch.arange(100.0).view(10, 10), torch.zeros(10, 10, dtype=torch.bool)
    few.view(-1)[[3, 50, 97]] = True
    kept = top_k(big, 2, few, ties=ties)
    assert kept.shape == big.shape and kept.view(-1).nonzero().flatten().tolist() == [50, 97]


def test_pruning_and_the_global_budget_rank_through_top_k():
    torch.manual_seed(0)
    model = create_model("lenet-300-100", input_shape=(20,), num_classes=4)
    names = prunable_names(model)
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.randint(0, 3, dict(model.named_parameters())[n].shape, generator=g).float() for n in names}
    d = layer_densities("global", model, names, 0.2, scores=scores, exact=False)
    pooled = top_k(torch.cat([scores[n].flatten() for n in names]), int(math.floor(0.2 * sum(
        scores[n].numel() for n in names) + 0.5)))
    sizes = [scores[n].numel() for n in names]
    assert [d[n] for n in names] == [int(part.sum()) / part.numel() for part in pooled.split(sizes)]


# --- random masks ---------------------------------------------------------------------------------

def test_every_random_mask_builder_draws_the_same_positions_from_the_same_seed():
    torch.manual_seed(0)
    model = create_model("lenet-300-100", input_shape=(20,), num_classes=4)
    names = prunable_names(model)
    drawn = random_masks(model, names, dict(zip(names, (0.1, 0.5, 1.0))), torch.Generator().manual_seed(4))
    like = drawn.random_like(torch.Generator().manual_seed(4))
    grouped = drawn.random_in_groups(torch.Generator().manual_seed(4), [[n] for n in names])
    full = Masks.ones_for(model, names)
    within = drawn.random_like(torch.Generator().manual_seed(4), within=full)
    for n in names:
        assert torch.equal(drawn[n], like[n]) and torch.equal(drawn[n], grouped[n]) and torch.equal(drawn[n], within[n])
    assert drawn.layer_counts() == {"fc1.weight": 600, "fc2.weight": 15000, "fc3.weight": 400}


def test_random_positions_draws_among_the_allowed_indices():
    allowed = torch.tensor([2, 5, 7, 11])
    flat = random_positions(12, 3, torch.Generator().manual_seed(0), allowed)
    assert int(flat.sum()) == 3 and set(flat.nonzero().flatten().tolist()) <= {2, 5, 7, 11}


# --- prunable layer types -------------------------------------------------------------------------

def test_one_list_of_weight_layer_types_serves_masks_init_flops_and_models():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2 * 2, 3))
    assert prunable_names(model) == ["0.weight", "2.weight"]
    assert first_layer_name(model) == "0"
    assert [r["name"] for r in layer_flops(model, (1, 4, 4, 4))] == ["0", "2"]
    before = model[0].weight.detach().clone()
    apply_init(model, "kaiming-normal")
    assert not torch.equal(before, model[0].weight)


# --- the density range ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.5, float("nan"), "0.5", None])
def test_check_fraction_refuses_anything_outside_zero_one(value):
    with pytest.raises(JackpotError, match=r"^--density must be in \(0, 1\], got "):
        check_fraction(value, "--density")


def test_every_density_check_refuses_alike():
    for ok in (1, 1.0, 1e-9):
        check_fraction(ok, "x")
    model = create_model("lenet-300-100", input_shape=(20,), num_classes=4)
    names = prunable_names(model)
    with pytest.raises(JackpotError, match=r"^target density must be in \(0, 1\], got 0$"):
        layer_densities("uniform", model, names, 0)
    with pytest.raises(JackpotError, match=r"^target density must be in \(0, 1\], got 1.5$"):
        iterative_prune("magnitude", model, Masks.ones_for(model, names), None, 1.5, 1)
    with pytest.raises(JackpotError, match=r"^final density must be in \(0, 1\], got 0$"):
        GradualMagnitude(final_density=0, start=0, end=10)
    with pytest.raises(JackpotError, match=r"^--density must be in \(0, 1\] \(fraction of weights kept\), got 2.0$"):
        validate(RunConfig(kind="pai", pai=PaiConfig(density=2.0)))
    with pytest.raises(JackpotError, match=r"^--corrupt-fraction must be in \(0, 1\], got 0.0$"):
        validate(RunConfig(data=DataConfig(corrupt="random-labels", corrupt_fraction=0.0)))


# --- field annotations ----------------------------------------------------------------------------

def test_flags_and_grid_values_convert_through_one_annotation_reader():
    assert scalar_type("float | None") == (float, True)
    assert scalar_type("int") == (int, False) and scalar_type("bool") == (bool, False)
    parser = argparse.ArgumentParser()
    add_config_flags(parser, ("prune", "lottery"))
    args = parser.parse_args(["--output-fraction", "0.5", "--fraction", "0.25"])
    assert getattr(args, "prune.output_fraction") == 0.5 and getattr(args, "prune.fraction") == 0.25
    grid = parse_grid(["prune.output_fraction=none,0.5", "seed=1,2", "lottery.levels=3"], "lottery")
    assert grid == {"prune.output_fraction": [None, 0.5], "seed": [1, 2], "lottery.levels": [3]}
    with pytest.raises(JackpotError, match=r"bad value 'x' \(expected int\)"):
        parse_grid(["lottery.levels=x"], "lottery")


# --- mean ± std -----------------------------------------------------------------------------------

def test_mean_std_is_the_sample_deviation_zero_for_one_seed_nan_for_none():
    values = [0.61, 0.62, 0.66]
    assert mean_std(values) == (statistics.fmean(values), statistics.stdev(values))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


# --- layer collapse, init-normalised magnitude ----------------------------------------------------

def test_a_lottery_level_that_empties_a_layer_is_refused_before_its_mask_is_saved(tiny_npz, tmp_path):
    cfg = RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40), model=ModelConfig(model="lenet-300-100"),
                    train=TrainConfig(duration="1ep"), prune=PruneConfig(fraction=0.999, scope="global"),
                    lottery=LotteryConfig(levels=1, controls=""))
    with pytest.raises(JackpotError, match=r"^level 1 would prune fc\d\.weight(, fc\d\.weight)* to zero weights; "
                                           r"stop at fewer --levels, lower --fraction, or keep that layer dense"):
        run_lottery(cfg, root=tmp_path, progress=quiet)
    assert not list(tmp_path.glob("lottery-*/level_01/mask.pt"))


def test_lottery_ranks_by_the_same_init_normalised_magnitude_as_prune_at_init(tiny_npz, tmp_path):
    base = RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40), model=ModelConfig(model="lenet-300-100"),
                     train=TrainConfig(duration="1ep"), lottery=LotteryConfig(levels=1, controls=""))
    run = run_lottery(replace(base, prune=PruneConfig(fraction=0.8, scope="global", score="magnitude-init-normalized")),
                      root=tmp_path, progress=quiet)
    init = torch.load(run.path / "init.pt", weights_only=True)
    model = create_model("lenet-300-100", (20,), 4)
    model.load_state_dict(torch.load(run.path / "level_00/ticket/final.pt", weights_only=True))
    full = Masks.ones_for(model, prunable_names(model))
    scores = magnitude_init_normalized(model, full, init_scale=init_scales(init, full))
    expected = top_k(torch.cat([scores[n].flatten() for n in full]), keep_count(0.2, full.size()))
    mask = Masks.load(run.path / "level_01/mask.pt")
    assert torch.equal(torch.cat([mask[n].flatten() for n in full]), expected)


# --- is this a VGG --------------------------------------------------------------------------------

def test_vgg_style_is_the_registered_family_not_a_guess_from_the_name(monkeypatch):
    assert {i.name for i in list_models() if is_vgg(i.name)} == {"vgg-11", "vgg-16", "vgg-19"}
    lenet = registry._REGISTRY["conv-4"]
    lookalike = replace(lenet, info=replace(lenet.info, name="vgg-lookalike"))
    monkeypatch.setitem(registry._REGISTRY, "vgg-lookalike", lookalike)
    assert model_info("vgg-lookalike").family == "conv" and not is_vgg("vgg-lookalike")
    assert inspect_budget("vgg-lookalike", "smart-ratio", 0.3)["layers"] == inspect_budget("conv-4", "smart-ratio", 0.3)["layers"]
    with pytest.raises(JackpotError, match="unknown model 'vgg-99'"):
        is_vgg("vgg-99")


def test_one_schedule_family_gives_each_methods_own_formula_bit_for_bit():
    """DST drop fractions (RigL cosine, inverse-power), GMP's cubic, iterative SynFlow rounds and
    IMP levels all come from sparse/schedules.py; each equals its paper's formula, written out here."""
    import math

    from jackpot.sparse.schedules import Schedule
    for alpha, t_end in ((0.3, 750), (0.5, 7)):
        for step in range(0, t_end + 3):
            p = min(1.0, step / t_end)
            assert Schedule("cosine", alpha).value(step, t_end) == alpha / 2 * (1 + math.cos(math.pi * p))
            assert Schedule("polynomial", alpha, 0.0).value(step, t_end) == alpha * (1 - p) ** 3
    for d, rounds in ((0.1, 100), (0.013, 7)):
        for k in range(1, rounds + 1):
            assert Schedule("exponential", 1.0, d).value(k, rounds) == d ** (k / rounds)
            assert Schedule("linear", 1.0, d).value(k, rounds, clip=False) == 1.0 - (1.0 - d) * k / rounds
    for f in (0.2, 0.45):
        for level in range(30):
            assert Schedule("exponential", 1.0, 1.0 - f).value(level, clip=False) == (1.0 - f) ** level
    for step in range(10, 58):
        p = (step - 10) / 47
        assert Schedule("polynomial", 1.0, 0.1).value(step - 10, 47) == 0.1 + 0.9 * (1 - p) ** 3
    assert Schedule("constant", 0.3).value(10 ** 6) == 0.3
    with pytest.raises(JackpotError, match="unknown schedule"):
        Schedule("stepwise", 1.0)


def test_dst_drop_fraction_and_synflow_rounds_read_the_one_schedule_family(monkeypatch):
    """UpdateSchedule.drop_fraction and iterative_prune's per-round density are Schedule values:
    bit for bit the formulas they used to write out (the last round exactly the target)."""
    from jackpot.sparse import scores as scores_mod
    from jackpot.sparse.dst import UpdateSchedule
    from jackpot.sparse.schedules import Schedule
    for alpha, t_end in ((0.3, 750), (0.5, 7), (0.3, 0)):
        for step in range(0, max(t_end, 1) + 3):
            p = min(1.0, step / max(1, t_end))
            for kind, formula in (("cosine", alpha / 2 * (1 + math.cos(math.pi * p))), ("constant", alpha),
                                  ("inverse-power", alpha * (1 - p) ** 3)):
                assert UpdateSchedule(alpha=alpha, t_end=t_end, kind=kind).drop_fraction(step) == formula
    assert UpdateSchedule(alpha=0.4, t_end=10, kind="inverse-power", power=2).drop_fraction(5) == 0.4 * 0.5 ** 2

    seen = []
    real = scores_mod.prune_to_density
    monkeypatch.setattr(scores_mod, "prune_to_density", lambda s, m, d, scope: seen.append(d) or real(s, m, d, scope))
    model = create_model("lenet-300-100", input_shape=(20,), num_classes=5)
    masks = Masks.ones_for(model, prunable_names(model))
    for schedule, d, rounds in (("exponential", 0.013, 7), ("linear", 0.1, 6), ("exponential", 0.2, 1)):
        seen.clear()
        iterative_prune("magnitude", model, masks, None, d, rounds, schedule)
        formula = [d ** (k / rounds) if schedule == "exponential" else 1.0 - (1.0 - d) * k / rounds
                   for k in range(1, rounds)] + [d]
        assert seen == formula
        assert seen[:-1] == [Schedule(schedule, 1.0, d).value(k, rounds, clip=False) for k in range(1, rounds)]
