"""Invariant 4 and the DST skeleton: counts kept, grown weights at their init value with zero
optimizer state, drop-fraction schedules, GMP's cubic, and a new method in a few lines."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from jackpot.cli.flags import in_flags
from jackpot.errors import JackpotError
from jackpot.models import create_model
from jackpot.sparse import Masks, Sparsifier, keep_count, prunable_names
from jackpot.sparse.dst import DropGrow, METHODS, UpdateSchedule, make_method
from jackpot.sparse.gmp import GradualMagnitude


def sparse_setup(density=0.1, opt="sgd", seed=0):
    torch.manual_seed(seed)
    model = create_model("lenet-300-100", input_shape=(20,), num_classes=5)
    full = Masks.ones_for(model, prunable_names(model))
    masks = Masks({n: torch.zeros_like(m) for n, m in full.items()})
    for n, m in masks.items():  # exact count per layer, random positions
        m.view(-1)[torch.randperm(m.numel())[:keep_count(density, m.numel())]] = True
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=1e-3))
    sparsifier = Sparsifier(model, masks).attach(optimizer)
    return model, optimizer, sparsifier


def train(model, optimizer, sparsifier, method, steps, on_update=None):
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        x, y = torch.randn(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)
        before = sparsifier.masks.clone()
        if hasattr(method, "on_step_start"):
            method.on_step_start(step, model, sparsifier)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        skip = method.after_backward(step, model, sparsifier) if hasattr(method, "after_backward") else False
        if on_update and any(not torch.equal(before[n], sparsifier.masks[n]) for n in before):
            on_update(step, before, sparsifier.masks)
        if not skip:
            optimizer.step()


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_counts_grow_values_and_state(name, opt):
    model, optimizer, sparsifier = sparse_setup(opt=opt)
    counts = sparsifier.masks.layer_counts()
    total = sparsifier.masks.count()
    method = make_method(name, UpdateSchedule(delta_t=10, alpha=0.3, t_end=80), seed=1)
    params = dict(model.named_parameters())
    updates = []

    def check(step, before, after):
        updates.append(step)
        if name in ("snfs", "dsr"):  # these redistribute across layers, the total is exact
            assert after.count() == total
        else:
            assert after.layer_counts() == counts
        for n in after:
            grown = after[n] & ~before[n]
            assert (params[n].detach()[grown] == 0).all()  # grow_init = zero
            for value in optimizer.state[params[n]].values():
                if torch.is_tensor(value) and value.shape == grown.shape:
                    assert (value[grown] == 0).all() and (value[~after[n]] == 0).all()
            assert (params[n].detach()[~after[n]] == 0).all()

    train(model, optimizer, sparsifier, method, 100, check)
    if name == "static":
        assert updates == []
    else:
        assert updates and all(s % 10 == 0 and 0 < s < 80 for s in updates)
        assert len(method.history) == 7


def test_just_dropped_weights_can_be_regrown_and_keep_their_value():
    model, optimizer, sparsifier = sparse_setup()
    w = dict(model.named_parameters())["fc1.weight"]
    mask = sparsifier.masks["fc1.weight"]

    class DropThenRegrowSame(DropGrow):  # grow score favours currently-active weights
        def grow_score(self, layer):
            return layer.mask.float()

    before = w.detach().clone()
    method = DropThenRegrowSame(UpdateSchedule(delta_t=1, alpha=0.5, t_end=10, kind="constant"))
    method.update(1, model, sparsifier)
    assert torch.equal(sparsifier.masks["fc1.weight"], mask)
    assert torch.equal(w.detach(), before)
    assert method.history[-1]["regrown"] == method.history[-1]["dropped"] > 0


def test_grow_init_fresh_values_are_nonzero_at_grown_positions():
    model, optimizer, sparsifier = sparse_setup()
    method = make_method("set", UpdateSchedule(delta_t=1, alpha=0.3, t_end=10), grow_init="init", seed=3)
    before = sparsifier.masks.clone()
    x, y = torch.randn(8, 20), torch.randint(0, 5, (8,))
    F.cross_entropy(model(x), y).backward()
    method.update(1, model, sparsifier)
    w = dict(model.named_parameters())["fc1.weight"].detach()
    grown = sparsifier.masks["fc1.weight"] & ~before["fc1.weight"]
    bound = 1 / math.sqrt(20)
    assert grown.any() and (w[grown] != 0).all() and (w[grown].abs() <= bound).all()


def test_rigl_grows_the_largest_dense_gradients():
    model, optimizer, sparsifier = sparse_setup()
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    F.cross_entropy(model(x), y).backward()
    grad = dict(model.named_parameters())["fc2.weight"].grad.clone()
    before = sparsifier.masks["fc2.weight"].clone()
    make_method("rigl", UpdateSchedule(delta_t=1, alpha=0.3, t_end=10, kind="constant")).update(1, model, sparsifier)
    grown = sparsifier.masks["fc2.weight"] & ~before
    not_grown = ~sparsifier.masks["fc2.weight"]
    assert grad.abs()[grown].min() >= grad.abs()[not_grown].max()


def test_cosine_and_other_schedules_follow_the_formulas():
    s = UpdateSchedule(delta_t=100, alpha=0.3, t_end=7500)
    for t in (0, 100, 1000, 3750, 7000):
        assert s.drop_fraction(t) == pytest.approx(0.3 / 2 * (1 + math.cos(math.pi * t / 7500)))
    assert s.drop_fraction(3750) == pytest.approx(0.15)
    assert UpdateSchedule(alpha=0.5, t_end=1000, kind="constant").drop_fraction(900) == 0.5
    assert UpdateSchedule(alpha=0.5, t_end=1000, kind="inverse-power").drop_fraction(500) == pytest.approx(0.5 * 0.5 ** 3)
    assert [t for t in range(0, 1001) if s.is_update(t)][:2] == [100, 200]
    assert not s.is_update(7500) and s.is_update(7400)


def test_gmp_density_matches_the_cubic_at_each_pruning_step():
    model, optimizer, sparsifier = sparse_setup(density=1.0)
    gmp = GradualMagnitude(final_density=0.1, start=10, end=60, every=10)
    seen = {}
    train(model, optimizer, sparsifier, gmp, 80, lambda step, b, a: seen.setdefault(step, a.layer_counts()))
    for step, counts in seen.items():
        d = 0.1 + 0.9 * (1 - (step - 10) / 50) ** 3
        assert counts == {n: keep_count(d, m.numel()) for n, m in sparsifier.masks.items()}, step
    assert sorted(seen) == [20, 30, 40, 50, 60]  # step 10 is d=1: nothing to prune
    assert sparsifier.masks.layer_counts() == {n: keep_count(0.1, m.numel()) for n, m in sparsifier.masks.items()}


def test_a_new_method_on_the_skeleton_is_a_few_lines():
    class GradientMagnitudeProduct(DropGrow):
        """Drop smallest |w * g|, grow largest |g|: 6 lines on top of the skeleton."""
        needs_grad = True

        def drop_score(self, layer):
            return (layer.weight * layer.grad).abs()

        def grow_score(self, layer):
            return layer.grad.abs()

    model, optimizer, sparsifier = sparse_setup()
    counts = sparsifier.masks.layer_counts()
    train(model, optimizer, sparsifier, GradientMagnitudeProduct(UpdateSchedule(delta_t=5, t_end=30)), 40)
    assert sparsifier.masks.layer_counts() == counts


@pytest.mark.parametrize("kwargs, message", [
    (dict(delta_t=0), "`sparse.delta_t`"), (dict(alpha=1.5), "`sparse.alpha`"), (dict(kind="sawtooth"), "drop schedule"),
])
def test_bad_schedules(kwargs, message):
    with pytest.raises(JackpotError, match=re.escape(message)):
        UpdateSchedule(**kwargs)


@pytest.mark.parametrize("make, parameter, flag", [
    (lambda: UpdateSchedule(delta_t=0), "`sparse.delta_t`", "--delta-t must be a positive number of steps"),
    (lambda: UpdateSchedule(alpha=-0.1), "`sparse.alpha`", "--alpha (drop fraction) must be in [0, 1]"),
    (lambda: make_method("rigl", UpdateSchedule(), grad_accumulation=0), "`sparse.grad_accumulation`",
     "--grad-accumulation must be >= 1"),
])
def test_engine_errors_name_config_parameters_the_cli_prints_as_flags(make, parameter, flag):
    with pytest.raises(JackpotError) as e:
        make()
    assert parameter in str(e.value) and "--" not in str(e.value)
    assert in_flags(str(e.value)).startswith(flag)


def test_an_unknown_grow_init_names_its_parameter_at_the_first_grow():
    model, optimizer, sparsifier = sparse_setup()
    method = make_method("set", UpdateSchedule(delta_t=5, t_end=30), grow_init="fresh")
    with pytest.raises(JackpotError) as e:
        train(model, optimizer, sparsifier, method, 6)
    assert "unknown `sparse.grow_init` 'fresh'" in str(e.value)
    assert in_flags(str(e.value)).startswith("unknown --grow-init 'fresh'")


def test_dsr_drops_below_its_threshold_adapts_it_and_resumes_with_it():
    """Each layer drops its active weights under H (keeping one), H doubles when too few go and
    halves when too many; as many weights grow as were dropped, never a just-dropped one; H travels
    with the checkpoint."""
    model, optimizer, sparsifier = sparse_setup()
    schedule = UpdateSchedule(delta_t=5, alpha=0.3, t_end=30, kind="constant")
    method = make_method("dsr", schedule, seed=1)
    params = dict(model.named_parameters())
    seen = []  # (H, |w|) just before each update
    update = method.update

    def spy(step, model_, sp):
        seen.append((method.threshold, {n: params[n].detach().abs().clone() for n in sp.masks}))
        return update(step, model_, sp)
    method.update = spy

    def check(step, before, after):
        h, w = seen[-1]
        dropped = {n: int((m & ~after[n]).sum()) for n, m in before.items()}
        assert dropped == {n: min(int(((w[n] < h) & m).sum()), int(m.sum()) - 1) for n, m in before.items()}
        total, target = sum(dropped.values()), 0.3 * before.count()
        assert method.threshold == (h / 2 if total > 1.1 * target else h * 2 if total < 0.9 * target else h)
        assert after.count() == before.count() and method.history[-1]["regrown"] == 0

    train(model, optimizer, sparsifier, method, 26, check)
    assert len(method.history) == 5 and len({h for h, _ in seen}) > 1  # H moved
    resumed = make_method("dsr", schedule, seed=1)
    resumed.load_state_dict(method.state_dict())
    assert resumed.threshold == method.threshold != 1e-3 and resumed.history == method.history


def test_unknown_method():
    with pytest.raises(JackpotError, match="unknown sparse training method"):
        make_method("magic", UpdateSchedule())


def test_rigl_grad_accumulation_sums_the_batches_before_the_update():
    """With grad_accumulation=3, the grow score is the sum of the dense gradients of the 3 batches
    ending at the update step (steps 8, 9, 10 for an update at 10)."""
    model, optimizer, sparsifier = sparse_setup()
    method = make_method("rigl", UpdateSchedule(delta_t=10, alpha=0.3, t_end=100, kind="constant"),
                         grad_accumulation=3)
    captured = {}
    original = method.update

    def spy(step, model_, sp):
        captured["grad_sum"] = {n: g.clone() for n, g in method.grad_sum.items()}
        captured["grad"] = dict(model_.named_parameters())["fc1.weight"].grad.clone()
        return original(step, model_, sp)
    method.update = spy
    grads = {}
    g = torch.Generator().manual_seed(0)
    for step in range(11):
        x, y = torch.randn(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads[step] = dict(model.named_parameters())["fc1.weight"].grad.clone()
        if not method.after_backward(step, model, sparsifier):
            optimizer.step()
    assert torch.allclose(captured["grad_sum"]["fc1.weight"], grads[8] + grads[9])
    assert torch.equal(captured["grad"], grads[10])
    assert method.grad_sum == {}  # consumed by the update
