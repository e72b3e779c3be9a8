import math

import pytest
import torch
from torch import nn

from jackpot.errors import JackpotError
from jackpot.models import create_model
from jackpot.sparse import keep_count, prunable_names
from jackpot.sparse.distributions import (BUDGETS, budget_report, check_collapse, counts_from_densities,
                                          layer_densities, random_masks)


def _model(name):
    torch.manual_seed(0)
    model = create_model(name)
    return model, prunable_names(model)


def _sizes(model, names):
    params = dict(model.named_parameters())
    return {n: params[n].numel() for n in names}


def _kept(model, names, densities):
    return sum(counts_from_densities(densities, _sizes(model, names)).values())


def test_registry_and_input_errors():
    assert set(BUDGETS) >= {"uniform", "uniform-first-dense", "er", "erk", "smart-ratio", "global", "custom"}
    model, names = _model("lenet-300-100")
    with pytest.raises(JackpotError, match="valid budgets"):
        layer_densities("erk2", model, names, 0.1)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(JackpotError, match=r"\(0, 1\]"):
            layer_densities("uniform", model, names, bad)
    assert layer_densities("erk", model, names, 1.0) == {n: 1.0 for n in names}


@pytest.mark.parametrize("budget", ["uniform", "uniform-first-dense", "er", "erk", "smart-ratio"])
@pytest.mark.parametrize("density", [0.1, 0.05, 0.02])
def test_every_budget_keeps_exactly_the_target(budget, density):
    model, names = _model("resnet-32")
    total = sum(_sizes(model, names).values())
    d = layer_densities(budget, model, names, density)
    assert all(0.0 <= v <= 1.0 for v in d.values())
    assert _kept(model, names, d) == keep_count(density, total)
    real = layer_densities(budget, model, names, density, exact=False)  # the real solve, before rounding
    assert sum(real[n] * s for n, s in _sizes(model, names).items()) == pytest.approx(density * total)


def test_uniform_and_first_dense():
    model, names = _model("lenet-300-100")
    assert set(layer_densities("uniform", model, names, 0.2, exact=False).values()) == {0.2}
    d = layer_densities("uniform-first-dense", model, names, 0.9)
    assert d["fc1.weight"] == 1.0 and d["fc2.weight"] == pytest.approx(d["fc3.weight"], abs=1e-3)
    # fc1 holds 235200 of 266200 weights: a 50% target is out of reach with fc1 dense.
    with pytest.raises(JackpotError, match="cannot be met"):
        layer_densities("uniform-first-dense", model, names, 0.5)
    with pytest.raises(JackpotError, match="cannot be met"):
        layer_densities("erk", model, names, 0.5, first_dense=True)


def test_erk_formula_and_dense_layers():
    model, names = _model("resnet-32")
    params = dict(model.named_parameters())
    d = layer_densities("erk", model, names, 0.1, exact=False)
    raw = {n: sum(params[n].shape) / math.prod(params[n].shape) for n in names}
    dense = [n for n in names if d[n] == 1.0]
    assert "conv.weight" in dense and len(dense) < len(names)  # the 3-channel stem saturates first
    scaled = [n for n in names if n not in dense]
    eps = d[scaled[0]] / raw[scaled[0]]
    assert all(d[n] == pytest.approx(eps * raw[n]) for n in scaled)
    assert all(eps * raw[n] >= 1.0 for n in dense) and all(d[n] < 1.0 for n in scaled)
    er = layer_densities("er", model, names, 0.1, exact=False)  # ER has no kernel term: 3x3 and 1x1 alike
    assert er["blocks.5.conv1.weight"] == pytest.approx(er["blocks.5.shortcut.0.weight"])
    assert d["blocks.5.conv1.weight"] < d["blocks.5.shortcut.0.weight"]  # ERK favours the 1x1 kernel


def test_erk_conv1d_uses_one_kernel_dim_and_power_zero_is_uniform():
    model = nn.Sequential(nn.Conv1d(4, 8, 5), nn.Conv1d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    names = ["0.weight", "1.weight", "3.weight"]
    d = layer_densities("erk", model, names, 0.5, exact=False)
    raw = {"0.weight": (8 + 4 + 5) / (8 * 4 * 5), "1.weight": (8 + 8 + 3) / (8 * 8 * 3)}
    assert d["0.weight"] / d["1.weight"] == pytest.approx(raw["0.weight"] / raw["1.weight"])
    flat = layer_densities("erk", model, names, 0.5, erk_power_scale=0.0, exact=False)
    assert flat == pytest.approx({n: 0.5 for n in names})


def test_smart_ratio_vgg19_matches_the_authors():
    model, names = _model("vgg-19")
    total = sum(_sizes(model, names).values())
    for density in (0.1, 0.05, 0.02):
        d = layer_densities("smart-ratio", model, names, density, vgg_style=True)
        assert _kept(model, names, d) / total == density  # exact (also holds to float precision unrounded)
        assert d["fc.weight"] == pytest.approx(0.3, abs=1e-3)
    d = layer_densities("smart-ratio", model, names, 0.1, vgg_style=True)
    assert [round(d[n], 3) for n in names[:8]] == [1, 1, 1, 1, 1, 1, 0.318, 0.173]
    prop = layer_densities("smart-ratio", model, names, 0.1, vgg_style=True, redistribute="proportional")
    assert [round(prop[n], 3) for n in names[4:7]] == [0.980, 0.583, 0.363]


def test_smart_ratio_resnet32_follows_the_formula():
    model, names = _model("resnet-32")
    sizes = _sizes(model, names)
    L = len(names)  # every conv/linear module is masked here, in module order (fc last)
    assert L == 34 and names[-1] == "fc.weight"
    for density in (0.1, 0.05, 0.02):
        r = {n: (L - l + 1) ** 2 + (L - l + 1) for l, n in enumerate(names[:-1], start=1)}
        k = (density * sum(sizes.values()) - 0.3 * sizes["fc.weight"]) / sum(r[n] * sizes[n] for n in r)
        expected = {**{n: k * r[n] for n in r}, "fc.weight": 0.3}
        assert max(expected.values()) < 1  # never clips
        assert layer_densities("smart-ratio", model, names, density, exact=False) == pytest.approx(expected)


def test_global_budget_from_scores():
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    names = ["0.weight", "1.weight"]
    scores = {"0.weight": torch.arange(12.0).view(3, 4), "1.weight": torch.full((2, 3), 100.0)}
    d = layer_densities("global", model, names, 0.5, scores=scores)  # keep 9: all 6 of layer 1, top 3 of 0
    assert d == {"0.weight": 3 / 12, "1.weight": 1.0}
    with pytest.raises(JackpotError, match="scores"):
        layer_densities("global", model, names, 0.5)


def test_custom_budget():
    model, names = _model("lenet-300-100")
    sizes = _sizes(model, names)
    d = layer_densities("custom", model, names, 0.1, custom={"fc3": 1.0, "fc2.weight": 0.5})
    assert d["fc3.weight"] == 1.0 and d["fc2.weight"] == 0.5
    assert _kept(model, names, d) == keep_count(0.1, sum(sizes.values()))
    with pytest.raises(JackpotError, match=r"'fc9'.*valid: fc1"):
        layer_densities("custom", model, names, 0.1, custom={"fc9": 0.5})
    with pytest.raises(JackpotError, match="cannot be met"):
        layer_densities("custom", model, names, 0.9, custom={"fc1": 0.1})
    # custom entries also work with a shaped budget: ERK solves the rest
    e = layer_densities("erk", model, names, 0.1, custom={"fc3": 1.0})
    assert e["fc3.weight"] == 1.0 and _kept(model, names, e) == keep_count(0.1, sum(sizes.values()))


def test_collapse_guard_and_min_density():
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    names = ["0.weight", "1.weight"]
    scores = {"0.weight": torch.ones(10, 10), "1.weight": torch.zeros(10, 10)}
    d = layer_densities("global", model, names, 0.3, scores=scores)
    counts = counts_from_densities(d, {"0.weight": (10, 10), "1.weight": 100})
    assert counts == {"0.weight": 60, "1.weight": 0}
    with pytest.raises(JackpotError, match="collapse: 1.weight"):
        check_collapse(counts)
    check_collapse(counts, allow=True)
    guarded = layer_densities("global", model, names, 0.3, scores=scores, min_density=0.05)
    assert guarded == {"0.weight": 0.55, "1.weight": 0.05}


def test_random_masks_exact_and_seeded():
    model, names = _model("conv-4")
    d = layer_densities("erk", model, names, 0.05)
    a = random_masks(model, names, d, torch.Generator().manual_seed(1))
    b = random_masks(model, names, d, torch.Generator().manual_seed(1))
    c = random_masks(model, names, d, torch.Generator().manual_seed(2))
    assert a.layer_counts() == counts_from_densities(d, _sizes(model, names))
    assert all(torch.equal(a[n], b[n]) for n in names) and not torch.equal(a[names[1]], c[names[1]])
    report = budget_report(model, names, d, target=0.05)
    assert report["target"] == 0.05 and report["achieved"] == pytest.approx(a.density())
    assert [r["kept"] for r in report["layers"]] == list(a.layer_counts().values())


def test_smart_ratio_on_an_mlp_scales_every_layer_by_the_formula():
    from jackpot.models import create_model
    from jackpot.sparse import prunable_names
    from jackpot.sparse.distributions import counts_from_densities, layer_densities
    model = create_model("lenet-300-100")
    names = prunable_names(model)
    d = layer_densities("smart-ratio", model, names, 0.1)
    sizes = {n: p.numel() for n, p in model.named_parameters() if n in names}
    counts = counts_from_densities(d, sizes)
    assert sum(counts.values()) == round(0.1 * sum(sizes.values()))
    # r_l = (L-l+1)^2 + (L-l+1) with L = 3: 12, 6, 2 -> densities in that ratio (before rounding
    # to whole weights)
    raw = layer_densities("smart-ratio", model, names, 0.1, exact=False)
    assert raw["fc1.weight"] / raw["fc2.weight"] == pytest.approx(2.0, rel=1e-9)
    assert raw["fc2.weight"] / raw["fc3.weight"] == pytest.approx(3.0, rel=1e-9)
