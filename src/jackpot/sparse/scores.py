"""Pruning scores (higher = more important = kept), one function per method, and iterative pruning.

A score is `fn(model, masks, batches, loss_fn=F.cross_entropy, **opts) -> {name: tensor}` over the
masked parameters. `batches` is a list of (x, y) chosen by the caller; data-free scores ignore it.
Scores never change the caller's model: no weight, buffer (BN running stats) or .grad is touched.
The caller guarantees pruned weights are zero, so gradient scores see the masked network.
compute_scores and iterative_prune take `device=` (the run's --device): they score a copy of the
model there, with the masks and batches moved once, and hand results back on the masks' device.
"""
from __future__ import annotations

import contextlib
import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JackpotError, check_fraction
from .masks import Masks
from .pruning import prune_to_density
from .schedules import Schedule


def _params(model: nn.Module, masks: Masks) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    return [params[n] for n in masks]


@contextlib.contextmanager
def _buffers_kept(model: nn.Module):
    """Scoring forwards in train mode would update BN running stats; put them back afterwards."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)


def _need_batches(name: str, batches) -> None:
    if not batches:
        raise JackpotError(f"the {name} score needs scoring batches (got none)")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on_device(model: nn.Module, masks: Masks, batches, device):
    """(model, masks, batches) on `device`: copies moved once (the caller's stay where they are),
    or the inputs themselves when device is None or already theirs."""
    if device is None or torch.device(device) == _device(model):
        return model, masks, batches
    device = torch.device(device)
    batches = None if batches is None else [(x.to(device), y.to(device)) for x, y in batches]
    return copy.deepcopy(model).to(device), masks.to(device), batches


def _grad_sum(model, masks, batches, loss_fn, scale=1.0) -> list[torch.Tensor]:
    """Gradient of the loss summed over batches, w.r.t. the masked params (autograd.grad: no .grad)."""
    ps, dev = _params(model, masks), _device(model)
    total = [torch.zeros_like(p) for p in ps]
    for x, y in batches:
        loss = loss_fn(model(x.to(dev)) / scale, y.to(dev))
        for t, g in zip(total, torch.autograd.grad(loss, ps)):
            t.add_(g)
    return total


def magnitude(model, masks, batches=None, loss_fn=F.cross_entropy, **_):
    return {n: p.detach().abs().clone() for n, p in zip(masks, _params(model, masks))}


def magnitude_init_normalized(model, masks, batches=None, loss_fn=F.cross_entropy, init_scale=None, **_):
    """|w| / sigma_l with sigma_l the layer's init std (`init_scale`, from the caller). Without it the
    std of the layer's current weights over the whole tensor is used (equal to the init std only at
    initialisation)."""
    out = {}
    for n, p in zip(masks, _params(model, masks)):
        scale = float(init_scale[n]) if init_scale and n in init_scale else float(p.detach().float().std())
        out[n] = p.detach().abs() / (scale if scale > 0 else 1.0)
    return out


def init_scales(weights: dict[str, torch.Tensor], names) -> dict[str, float]:
    """Each named tensor's std, from the initial weights (prune-at-init's fresh model, a lottery run's
    init.pt): the `init_scale` magnitude_init_normalized divides by."""
    return {n: float(weights[n].detach().float().std()) for n in names}


def random(model, masks, batches=None, loss_fn=F.cross_entropy, generator=None, **_):
    if generator is None:
        raise JackpotError("the random score needs a seeded torch.Generator")
    return {n: torch.rand(m.shape, generator=generator).to(m.device) for n, m in masks.items()}


def snip(model, masks, batches, loss_fn=F.cross_entropy, **_):
    """Lee et al. 2019: |w * dL/dw|, L summed over the batches (model in the caller's mode)."""
    _need_batches("snip", batches)
    with _buffers_kept(model):
        grads = _grad_sum(model, masks, batches, loss_fn)
    return {n: (p.detach() * g).abs() for n, p, g in zip(masks, _params(model, masks), grads)}


def grasp(model, masks, batches, loss_fn=F.cross_entropy, temperature=200.0, **_):
    """Wang et al. 2020. g = dL/dθ (logits / T), Hg = dθ(g_stop · dL/dθ) by double backprop.
    The paper removes the largest S(-θ) = -θ ⊙ Hg, so the keep-score is θ ⊙ Hg (as Synaptic-Flow);
    the paper's normalisation by |ΣS| does not change the ranking and is left out."""
    _need_batches("grasp", batches)
    ps, dev = _params(model, masks), _device(model)
    with _buffers_kept(model):
        g = _grad_sum(model, masks, batches, loss_fn, temperature)
        hg = [torch.zeros_like(p) for p in ps]
        for x, y in batches:
            loss = loss_fn(model(x.to(dev)) / temperature, y.to(dev))
            grads = torch.autograd.grad(loss, ps, create_graph=True)
            z = sum((gr * gs).sum() for gr, gs in zip(grads, g))
            for t, h in zip(hg, torch.autograd.grad(z, ps)):
                t.add_(h)
    return {n: p.detach() * h for n, p, h in zip(masks, ps, hg)}


def synflow(model, masks, batches=None, loss_fn=None, input_shape=None, double=False, **_):
    """Tanaka et al. 2020: in a copy with every parameter and float buffer replaced by |.| (BN too),
    masked, eval mode, R = sum f(1); score = |θ ⊙ dR/dθ| (0 for pruned weights). `double` avoids
    overflow of R in deep nets."""
    if input_shape is None:
        raise JackpotError("the synflow score needs input_shape (one example's shape, without batch)")
    net = copy.deepcopy(model).eval()
    if double:
        net.double()
    with torch.no_grad():
        for t in itertools.chain(net.parameters(), net.buffers()):
            if t.is_floating_point():
                t.abs_()
    masks.apply_to(net)
    ps = _params(net, masks)
    p0 = ps[0]
    r = net(torch.ones(1, *input_shape, dtype=p0.dtype, device=p0.device)).sum()
    return {n: (p.detach() * g).abs() for n, p, g in zip(masks, ps, torch.autograd.grad(r, ps))}


SCORES = {"magnitude": magnitude, "magnitude-init-normalized": magnitude_init_normalized, "random": random,
          "snip": snip, "grasp": grasp, "synflow": synflow}


def compute_scores(name: str, model: nn.Module, masks: Masks, batches=None, *, generator=None, invert=False,
                   loss_fn=F.cross_entropy, device=None, **opts) -> dict[str, torch.Tensor]:
    """Scores by registry name. invert=True keeps the lowest scores: negation, not 1/v (which breaks
    signed GraSP scores and zeros), so pruning keeps exactly the same counts. `device`: score there
    (see the module docstring); the scores come back on the masks' device."""
    if name not in SCORES:
        raise JackpotError(f"unknown score {name!r}; valid scores: {', '.join(SCORES)}")
    home = {n: m.device for n, m in masks.items()}
    model, masks, batches = _on_device(model, masks, batches, device)
    scores = SCORES[name](model, masks, batches, loss_fn, generator=generator, **opts)
    scores = {n: s.to(home[n]) for n, s in scores.items()}
    return {n: -s for n, s in scores.items()} if invert else scores


def iterative_prune(score_name: str, model: nn.Module, masks: Masks, batches, density: float, rounds: int,
                    schedule: str = "exponential", scope: str = "global", device=None, **opts) -> Masks:
    """Prune to `density` (of all masked weights) in `rounds` rounds, re-scoring the masked network
    each round (iterative SynFlow: 100 rounds; 1 round = one-shot). Round k targets d^(k/n)
    (exponential) or 1-(1-d)k/n (linear). Global scope ends at exactly keep_count(density, total);
    layerwise scope keeps keep_count(d_k, N_l) in every layer. `device`: every round scores and
    prunes there; the masks come back on the device of `masks`."""
    check_fraction(density, "target density")
    if rounds < 1:
        raise JackpotError(f"rounds must be at least 1, got {rounds}")
    if schedule not in ("exponential", "linear"):
        raise JackpotError(f"unknown schedule {schedule!r}; valid: exponential, linear")
    if scope not in ("global", "layerwise"):
        raise JackpotError(f"unknown scope {scope!r}; valid: global, layerwise")
    home = {n: m.device for n, m in masks.items()}
    model, current, batches = _on_device(model, masks.clone(), batches, device)
    per_round = Schedule(schedule, 1.0, density)
    for k in range(1, rounds + 1):
        d_k = per_round.value(k, rounds, clip=False)
        d_k = density if k == rounds else d_k  # no float drift on the last round
        net = current.apply_to(copy.deepcopy(model))
        scores = compute_scores(score_name, net, current, batches, **opts)
        current = prune_to_density(scores, current, d_k, scope)
    return Masks({n: m.to(home[n]) for n, m in current.items()})
