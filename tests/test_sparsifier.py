"""Invariant 2: pruned weights are exactly 0 after every step; their optimizer state is zero;
their gradient is readable (dense) between backward() and step()."""
import pytest
import torch
import torch.nn.functional as F

from jackpot.models import create_model
from jackpot.sparse import Masks, Sparsifier, prunable_names, prune

OPTIMIZERS = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam-wd": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    "adamw-wd": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
}


def setup(model_name, shape):
    torch.manual_seed(0)
    model = create_model(model_name, input_shape=shape, num_classes=10)
    masks = Masks.ones_for(model, prunable_names(model))
    masks = prune({n: torch.rand(m.shape) for n, m in masks.items()}, masks, 0.8)
    return model, masks


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model_name, shape", [("lenet-300-100", (20,)), ("mnist1d-cnn", (40,))])
def test_pruned_weights_stay_exactly_zero_for_50_steps(opt_name, model_name, shape):
    model, masks = setup(model_name, shape)
    opt = OPTIMIZERS[opt_name](model.parameters())
    # Warm the optimizer state densely first, so pruning must really zero it.
    x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    sp = Sparsifier(model, masks).attach(opt)
    params = dict(model.named_parameters())
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for n, m in masks.items():
            assert (params[n].detach()[~m] == 0.0).all()
    for n, m in masks.items():
        assert params[n].detach()[m].abs().sum() > 0  # kept weights still train
        for value in opt.state[params[n]].values():
            if torch.is_tensor(value) and value.shape == m.shape:
                assert (value[~m] == 0.0).all()
    sp.detach()


def test_dense_gradient_is_readable_before_the_step():
    model, masks = setup("lenet-300-100", (20,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Sparsifier(model, masks).attach(opt)
    x, y = torch.randn(16, 20), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()
    w = dict(model.named_parameters())["fc2.weight"]
    pruned = ~masks["fc2.weight"]
    assert (w.grad[pruned] != 0).sum() > 0.5 * pruned.sum()  # dense gradient at pruned positions
    opt.step()
    assert (w.grad[pruned] == 0).all() and (w.detach()[pruned] == 0).all()


def test_set_masks_zeroes_weights_and_state_when_pruning_more():
    model, masks = setup("lenet-300-100", (20,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sp = Sparsifier(model, masks).attach(opt)
    x, y = torch.randn(16, 20), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    fewer = prune({n: torch.rand(m.shape) for n, m in masks.items()}, masks, 0.5)
    sp.set_masks(fewer)
    p = dict(model.named_parameters())["fc1.weight"]
    gone = ~fewer["fc1.weight"]
    assert (p.detach()[gone] == 0).all()
    assert (opt.state[p]["exp_avg"][gone] == 0).all() and (opt.state[p]["exp_avg_sq"][gone] == 0).all()
