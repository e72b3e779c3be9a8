"""Sparse execution of training (`--execution sparse`): masked Linear layers train as SparseLinear
layers that store only their active weights, where that is measured faster, and the mask methods
(DST, static, GMP) update them in place.

Which layers: `choose_layers` times one training step of each masked Linear (forward, backward,
optimizer step) as masked dense and as SparseLinear, at the rows it really sees in a forward of
one training batch, at this process's thread count, in interleaved rounds (sparse.timing, the
clock export uses): for slow layers (a call over SLOW seconds, where rounds are costly and a
context switch is small beside a call) one call each decides when one form is CLEAR x faster, and
so does one call of a form over SLOW_DECISIVE seconds DECISIVE x slower than the other (a
99%-sparse 4096-wide layer: rounds of its masked form cost ~1 s a layer), else `rounds`; layers of
one shape, count and input are timed once. The faster form wins; convolutions and other layers stay masked dense. The choice (with its times) is kept in the
stage's checkpoint, so a resumed stage runs the same layers the same way, and in its done.json.

`SparseExecution` presents what the training loop and the mask methods use of a `Sparsifier`
(masks, set_masks, zero_state_at, attach): masked dense layers stay with an inner Sparsifier; a
sparse layer's mask is its structure. A mask method sees dense weights only at the steps it reads
them (`wrap`): there each sparse layer's dense weight is materialised and, when the method reads
gradients, its dense gradient (one dense product g^T x in that step's backward); the unchanged
method runs on them, and each changed layer is rebuilt from the result. Optimizer state (momentum,
Adam moments) moves with the weights that stay and is zero for grown ones, as masked training
leaves it; the step after an update applies the dense gradient at the new positions, as a masked
layer's autograd does. So masked and sparse runs of one config make the same mask updates and end
with the same weights within float tolerance. Between those steps nothing dense of a sparse layer
is kept but its bool mask. Costs: RigL one dense product per update (and per accumulated batch);
SNFS reads the dense gradient at every step, so it pays a dense product (and a materialised
weight) every step and keeps its dense statistic.

Convolutions whose masks empty whole channels run as the smaller dense conv over the kept ones
(sparse.channel_conv, chosen by the same measurement against masked dense); they keep their dense
weight, so masks, optimizer state and mask methods treat them as masked layers, and a step that
reads dense gradients (RigL's updates; SNFS's every step) runs them whole.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from ..errors import JackpotError
from ..flops import TrainingFlopsMeter
from .dst import DropGrow, Static
from .gmp import GradualMagnitude
from .masks import Masks
from . import channel_conv
from .sparse_linear import SparseLinear
from .sparsifier import Sparsifier
from .timing import seconds_per_call, time_interleaved

CLEAR, SLOW = 1.5, 0.01  # a 4096x4096 masked step takes ~0.3 s on one CPU thread
DECISIVE, SLOW_DECISIVE = 4.0, 0.05  # a 1%-dense 4096x4096 layer: ~0.1 s masked, ~5 ms sparse


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def measure_layer(linear: nn.Linear, mask: torch.Tensor, rows: int, input_grad: bool, make_optimizer,
                  rounds: int = 5) -> dict[str, float]:
    """Median seconds of one training step of `linear` with `mask`, as masked dense and as
    SparseLinear: forward of `rows` rows, backward (the input gradient when `input_grad`), the
    masked dense layer's gradient masking, and an optimizer step from `make_optimizer(params)`."""
    dev, dtype = linear.weight.device, linear.weight.dtype
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, linear.in_features, generator=gen).to(dev, dtype).requires_grad_(input_grad)
    grad_out = torch.randn(rows, linear.out_features, generator=gen).to(dev, dtype)
    mask = mask.to(dev)
    dense = copy.deepcopy(linear).requires_grad_(True)
    with torch.no_grad():
        dense.weight.mul_(mask)
    sparse = SparseLinear.from_dense(dense, mask)
    float_mask = mask.to(dtype)

    def step(layer, optimizer, masked):
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad_out)
        if masked:
            layer.weight.grad.mul_(float_mask)
        optimizer.step()

    opt_dense, opt_sparse = make_optimizer(list(dense.parameters())), make_optimizer(list(sparse.parameters()))
    return _time_forms({"masked": lambda: step(dense, opt_dense, True),
                        "sparse": lambda: step(sparse, opt_sparse, False)}, dev, rounds)


def measure_conv(conv: nn.Module, mask: torch.Tensor, input_shape: tuple[int, ...], input_grad: bool,
                 make_optimizer, rounds: int = 5, channels_last: bool = False) -> dict[str, float]:
    """Median seconds of one training step of `conv` with `mask` on inputs of `input_shape` (in
    channels_last memory when the run's are), as masked dense and with its empty channels removed
    (sparse.channel_conv), as measure_layer. Called under the run's autocast, it times that arithmetic."""
    dev, dtype = conv.weight.device, conv.weight.dtype
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=gen).to(dev, dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    mask = mask.to(dev)
    float_mask = mask.to(dtype)
    layers = {}
    for form in ("masked", "channels"):
        layer = copy.deepcopy(conv).requires_grad_(True)
        with torch.no_grad():
            layer.weight.mul_(float_mask)
        layers[form] = channel_conv.enable(layer, mask) if form == "channels" else channel_conv.disable(layer)
    grad_out = torch.randn(layers["masked"](x).shape, generator=gen).to(dev, dtype)

    def step(layer, optimizer):
        optimizer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad_out)
        layer.weight.grad.mul_(float_mask)
        optimizer.step()

    opts = {form: make_optimizer(list(layer.parameters())) for form, layer in layers.items()}
    return _time_forms({form: (lambda f=form: step(layers[f], opts[f])) for form in layers}, dev, rounds)


def _time_forms(fns: dict, dev, rounds: int) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up
    first = {k: seconds_per_call(fn, 1, dev) for k, fn in fns.items()}
    fast, slow = min(first.values()), max(first.values())
    # one call decides when both are slow and CLEAR apart, or the slow one is DECISIVE x the fast
    # one and over a scheduler slice itself: noise lengthens a call, so the fast form is no slower
    # than timed, and a preemption cannot stretch a call of over SLOW_DECISIVE seconds that much
    if (fast >= SLOW and slow >= CLEAR * fast) or (slow >= SLOW_DECISIVE and slow >= DECISIVE * fast):
        return first
    return time_interleaved(fns, rounds=rounds, device=dev)


def choose_layers(model: nn.Module, masks: Masks, example: torch.Tensor, make_optimizer,
                  rounds: int = 5) -> dict[str, dict]:
    """Per masked weight: {"execution": "sparse" (a Linear as SparseLinear), "channels" (a conv with
    its empty channels removed) or "masked", "density", and either the measured "seconds" of both
    forms with the "rows" (Linear) or "input_shape" (conv) they were timed at, or the "reason" it
    stays masked}."""
    masks.check_against(model)
    modules = dict(model.named_modules())
    seen: dict[str, tuple[int | tuple[int, ...], bool]] = {}

    def note(name, module, inputs):
        x = inputs[0]
        if isinstance(module, nn.Linear):
            seen.setdefault(name, (x.reshape(-1, module.in_features).shape[0], x.requires_grad))
        else:  # a conv: the input's shape and whether it is in channels_last memory
            last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            seen.setdefault(name, ((tuple(x.shape), last), x.requires_grad))

    hooks = []
    for name in masks:
        mod_name, _, leaf = name.rpartition(".")
        mod = modules.get(mod_name)
        if leaf == "weight" and mod_name and isinstance(mod, (nn.Linear,) + channel_conv.CONVS):
            hooks.append(mod.register_forward_pre_hook(lambda m, inputs, n=name: note(n, m, inputs)))
    training = model.training
    try:  # one forward of a batch: the rows each layer sees, and whether its input needs a gradient
        model.eval()
        with torch.enable_grad():
            model(example)
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    plan, timed = {}, {}
    for name, m in masks.items():
        mod_name, _, leaf = name.rpartition(".")
        if leaf != "weight":
            continue  # biases follow their layer
        mod = modules[mod_name]
        entry = {"execution": "masked", "density": int(torch.count_nonzero(m)) / m.numel()}
        if isinstance(mod, channel_conv.CONVS):
            entry.update(_conv_entry(mod, mod_name, m, seen.get(name), make_optimizer, rounds, timed))
        elif not isinstance(mod, nn.Linear):
            entry["reason"] = f"no sparse training kernel for {type(mod).__name__}"
        elif not mod_name:
            entry["reason"] = "the model itself is the layer"
        elif name not in seen:
            entry["reason"] = "not reached by a forward"
        else:
            rows, input_grad = seen[name]
            key = (tuple(m.shape), int(torch.count_nonzero(m)), mod.bias is not None, rows, input_grad)
            if key not in timed:
                timed[key] = measure_layer(mod, m, rows, input_grad, make_optimizer, rounds)
            seconds = timed[key]
            entry.update(rows=rows, seconds=seconds,
                         execution="sparse" if seconds["sparse"] < seconds["masked"] else "masked")
        plan[name] = entry
    return plan


def _conv_entry(conv, mod_name, mask, seen, make_optimizer, rounds, timed) -> dict:
    if conv.groups != 1:
        return {"reason": "grouped conv: masked dense"}
    if not channel_conv.removable(conv, mask):
        if bool(mask.all()):
            return {"reason": "dense conv (nothing pruned): masked dense"}
        return {"reason": "unstructured conv mask (no whole empty channel): masked dense"}
    if not mod_name or seen is None:
        return {"reason": "the model itself is the layer" if not mod_name else "not reached by a forward"}
    (input_shape, channels_last), input_grad = seen
    out, inp = channel_conv.kept_channels(mask)
    key = ("conv", tuple(mask.shape), tuple(out.tolist()), tuple(inp.tolist()), conv.bias is not None,
           conv.stride, conv.padding, conv.dilation, input_shape, channels_last, input_grad)
    if key not in timed:
        timed[key] = measure_conv(conv, mask, input_shape, input_grad, make_optimizer, rounds, channels_last)
    seconds = timed[key]
    return {"input_shape": list(input_shape), "seconds": seconds,
            "channels": {"out": [out.numel(), conv.out_channels], "in": [inp.numel(), conv.in_channels]},
            "execution": "channels" if seconds["channels"] < seconds["masked"] else "masked"}


class _DenseView:
    """What a mask method reads of the model at a step that reads weights: named_parameters() with
    each sparse layer's weight as a dense Parameter (its grad: the dense gradient, when captured)."""

    def __init__(self, model: nn.Module, dense: dict[str, nn.Parameter]):
        self.model, self.dense = model, dense

    def named_parameters(self, *args, **kwargs):
        for name, p in self.model.named_parameters(*args, **kwargs):
            prefix, _, leaf = name.rpartition(".")
            weight = f"{prefix}.weight" if prefix else "weight"
            yield (weight, self.dense[weight]) if leaf == "values" and weight in self.dense else (name, p)

    def parameters(self, *args, **kwargs):
        for _, p in self.named_parameters(*args, **kwargs):
            yield p


class SparseExecution:
    """The model's planned layers as SparseLinear (replaced in place), and the Sparsifier interface
    over all masks. `restore()` puts dense Linear layers with the trained weights back."""

    def __init__(self, model: nn.Module, masks: Masks, plan: dict[str, dict]):
        masks.check_against(model)
        params = dict(model.named_parameters())
        self.model, self.plan = model, dict(plan)
        self._order = list(masks)
        self._masks = Masks({n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()})
        self._layers: dict[str, SparseLinear] = {}
        self._channels: dict[str, nn.Module] = {}  # convs computing only their kept channels
        for name, entry in self.plan.items():
            if entry.get("execution") == "channels":
                conv = model.get_submodule(name.rpartition(".")[0]) if name in masks else None
                if not isinstance(conv, channel_conv.CONVS) or not name.endswith(".weight"):
                    raise JackpotError(f"sparse execution plan names {name!r}, which is no masked conv weight")
                self._channels[name] = channel_conv.enable(conv, self._masks[name])
                continue
            if entry.get("execution") != "sparse":
                continue
            mod_name = name.rpartition(".")[0]
            linear = model.get_submodule(mod_name) if name in masks and mod_name else None
            if not isinstance(linear, nn.Linear) or not name.endswith(".weight"):
                raise JackpotError(f"sparse execution plan names {name!r}, which is no masked Linear weight")
            layer = SparseLinear.from_dense(linear, self._masks[name])
            layer.values.requires_grad_(linear.weight.requires_grad)
            layer.train(linear.training)
            _set_module(model, mod_name, layer)
            self._layers[name] = layer
        rest = Masks({n: m for n, m in self._masks.items() if n not in self._layers})
        self._inner = Sparsifier(model, rest) if rest else None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._view: dict[str, nn.Parameter] | None = None
        self._pending: dict[str, torch.Tensor] = {}  # layer -> its mask before set_masks in a view
        # layer -> the new flat positions a mask method handed over with its masks (no nonzero pass)
        self._positions: dict[str, torch.Tensor] = {}
        self._zero_at: dict[str, list[torch.Tensor]] = {}
        self._wanting: set[int] = set()  # wrapped callbacks reading this step's dense gradients

    # --- the Sparsifier interface ---------------------------------------------------------------
    @property
    def masks(self) -> Masks:
        return self._masks  # the same object until the masks change (TrainingFlopsMeter relies on it)

    def set_masks(self, masks: Masks, positions: dict[str, torch.Tensor] | None = None) -> None:
        """`positions`: for some sparse layers, the new mask's flat positions (ascending), when the
        caller holds them (DST's updates): the rebuild takes them instead of finding them."""
        if set(masks) != set(self._order):
            raise JackpotError("sparse execution: new masks must name the same parameters as the old ones")
        new = Masks({n: masks[n].to(device=self._masks[n].device, dtype=torch.bool) for n in self._order})
        for n, m in new.items():
            if tuple(m.shape) != tuple(self._masks[n].shape):
                raise JackpotError(f"mask for {n} has shape {tuple(m.shape)}, the parameter has "
                                   f"{tuple(self._masks[n].shape)}")
        if self._inner is not None:
            self._inner.set_masks(Masks({n: m for n, m in new.items() if n not in self._layers}))
        for n, conv in self._channels.items():
            conv.set_channel_mask(new[n])
        old, self._masks = self._masks, new
        positions = positions or {}
        for n in self._layers:
            self._positions.pop(n, None)
            if n in positions:
                self._positions[n] = positions[n].to(self._masks[n].device)
            if self._view is not None:  # rebuilt when the method is done (it may still write weights)
                # the view's dropped positions are left as they are: a rebuild reads only the new ones
                self._pending.setdefault(n, old[n])
            elif self._changed(n, old[n]):
                self._rebuild(n)

    def _changed(self, name: str, before: torch.Tensor) -> bool:
        flat = self._positions.get(name)
        if flat is None:
            return not torch.equal(before, self._masks[name])
        return not torch.equal(flat, self._layers[name].flat_positions())

    def zero_state_at(self, name: str, positions: torch.Tensor) -> None:
        """`positions`: a bool mask of the weight's shape, or flat indices (a DST update's grown
        positions of a sparse layer)."""
        if name not in self._layers:
            self._inner.zero_state_at(name, positions)
            return
        self._zero_at.setdefault(name, []).append(positions)
        if self._view is None:
            self._zero_state(name)

    def attach(self, optimizer: torch.optim.Optimizer) -> "SparseExecution":
        self._optimizers.append(optimizer)
        if self._inner is not None:
            self._inner.attach(optimizer)
        return self

    def detach(self) -> None:
        if self._inner is not None:
            self._inner.detach()
        self._optimizers = []

    def mask_gradients(self) -> None:
        if self._inner is not None:
            self._inner.mask_gradients()

    def apply_to_weights(self) -> None:
        if self._inner is not None:
            self._inner.apply_to_weights()

    # --- rebuilding a sparse layer ----------------------------------------------------------------
    @torch.no_grad()
    def _rebuild(self, name: str, dense_weight: torch.Tensor | None = None) -> None:
        """Give layer `name` the structure of its current mask: values of the weights that stay
        (or `dense_weight` at the new positions), their optimizer state moved with them, zero for
        grown ones; the gradient at the new positions when this step's dense one was captured."""
        layer, mask = self._layers[name], self._masks[name]
        old_count = layer.values.numel()
        src, dst = layer.update_mask(mask, flat=self._positions.pop(name, None))
        flat = layer.flat_positions()  # the new positions, CSR order
        if dense_weight is not None:
            layer.values.copy_(dense_weight.reshape(-1)[flat])  # a gather: 6x faster than w[mask]
        if layer.dense_grad is not None:
            layer.values.grad = layer.dense_grad.reshape(-1)[flat]
        for opt in self._optimizers:
            state = opt.state.get(layer.values, {})
            for key, value in list(state.items()):
                if isinstance(value, torch.Tensor) and tuple(value.shape) == (old_count,):
                    moved = value.new_zeros(layer.values.shape)
                    moved[dst] = value[src]
                    state[key] = moved
        self._zero_state(name)

    @torch.no_grad()
    def _zero_state(self, name: str) -> None:
        given = self._zero_at.pop(name, None)
        if not given:
            return
        layer = self._layers[name]
        flat = layer.flat_positions()
        at = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        for positions in given:
            positions = positions.to(flat.device)
            if positions.dtype == torch.bool:
                at |= positions.reshape(-1)[flat]
            elif positions.numel() and flat.numel():  # flat indices: those among the layer's positions
                positions = positions.reshape(-1).contiguous()
                where = torch.searchsorted(flat, positions).clamp(max=flat.numel() - 1)
                at[where[flat[where] == positions]] = True
        for opt in self._optimizers:
            for value in opt.state.get(layer.values, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == at.shape:
                    value.masked_fill_(at, 0.0)

    @contextlib.contextmanager
    def dense_view(self):
        """Dense weights (and captured dense gradients) of the sparse layers for one mask-method
        call; the layers whose masks it changed are rebuilt afterwards, the dense tensors dropped."""
        self._view = {n: nn.Parameter(layer.dense_weight()) for n, layer in self._layers.items()}
        for n, p in self._view.items():
            p.grad = self._layers[n].dense_grad
            p.active_index = self._layers[n].flat_positions()  # DST drops among these (dst.Layer)
        try:
            yield _DenseView(self.model, self._view)
            for n, before in self._pending.items():
                if self._changed(n, before):
                    self._rebuild(n, self._view[n].detach())
            for n in list(self._zero_at):
                self._zero_state(n)
        finally:
            self._view, self._pending, self._positions = None, {}, {}

    def _want_dense_grads(self, who: object, wants: bool) -> None:
        if wants:
            self._wanting.add(id(who))
        else:
            self._wanting.discard(id(who))
        for layer in self._layers.values():
            layer.capture_dense_grad = bool(self._wanting)
            if not self._wanting:
                layer.dense_grad = None
        for conv in self._channels.values():  # the dense gradient of removed channels needs the whole conv
            conv.whole = bool(self._wanting)

    def wrap(self, callback):
        """The training-loop callback as it runs on the sparse layers (see the module docstring)."""
        if isinstance(callback, (Static, TrainingFlopsMeter)):  # never read weights (the meter: masks)
            return callback
        return _OnSparseLayers(callback, self)

    # --- leaving sparse execution -------------------------------------------------------------------
    def dense_model(self) -> nn.Module:
        """A dense copy of the model (for a snapshot such as a rewind point): transient."""
        out = copy.deepcopy(self.model)
        for name in self._layers:
            mod_name = name.rpartition(".")[0]
            _set_module(out, mod_name, out.get_submodule(mod_name).to_dense())
        for name in self._channels:
            channel_conv.disable(out.get_submodule(name.rpartition(".")[0]))
        return out

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict as its dense model has it (same keys, order, shapes), on the CPU:
        each sparse layer's weight materialised in turn, its index buffers left out."""
        prefixes = {name.rpartition(".")[0] + ".": self._layers[name] for name in self._layers}
        out = {}
        for key, value in self.model.state_dict().items():
            prefix, _, leaf = key.rpartition(".")
            layer = prefixes.get(prefix + ".")
            if layer is None:
                out[key] = value.detach().cpu()
            elif leaf == "values":
                out[prefix + ".weight"] = layer.dense_weight().cpu()
            elif leaf == "bias":
                out[key] = value.detach().cpu()
        return out

    def restore(self) -> None:
        """Dense Linear layers with the trained weights back in the model, layer by layer."""
        for name, layer in self._layers.items():
            dense = layer.to_dense()
            dense.weight.requires_grad_(layer.values.requires_grad)
            dense.train(layer.training)
            _set_module(self.model, name.rpartition(".")[0], dense)
        self._layers = {}
        for conv in self._channels.values():
            channel_conv.disable(conv)
        self._channels = {}

    def record(self) -> dict:
        """Kept in the stage's done.json: which masked layers ran sparse, which masked dense."""
        return {"mode": "sparse", "layers": self.plan,
                "sparse": [n for n, e in self.plan.items() if e.get("execution") == "sparse"],
                "channels": [n for n, e in self.plan.items() if e.get("execution") == "channels"],
                "masked": [n for n, e in self.plan.items() if e.get("execution") not in ("sparse", "channels")]}


class _OnSparseLayers:
    """A mask callback on a SparseExecution: at the steps it reads weights or dense gradients (DST:
    updates and dense-gradient steps; GMP: pruning steps; any other callback: every step) it runs on
    dense views, otherwise on the model itself."""

    def __init__(self, inner, execution: SparseExecution):
        self.inner, self.execution = inner, execution

    def _reads(self, step: int, phase: str) -> bool:
        if isinstance(self.inner, DropGrow):
            return phase == "after_backward" and (self.inner.schedule.is_update(step)
                                                  or self.inner.dense_gradient_at(step))
        if isinstance(self.inner, GradualMagnitude):
            return phase == "on_step_start" and self.inner.is_update(step)
        return True

    def _call(self, phase: str, step, model, sparsifier):
        fn = getattr(self.inner, phase)
        if not self._reads(step, phase):
            return fn(step, model, sparsifier)
        with self.execution.dense_view() as view:
            return fn(step, view, sparsifier)

    def on_step_start(self, step, model, sparsifier):
        # this step's backward captures dense gradients when the callback reads them after it
        self.execution._want_dense_grads(self, self._reads(step, "after_backward"))
        if hasattr(self.inner, "on_step_start"):
            return self._call("on_step_start", step, model, sparsifier)

    def after_backward(self, step, model, sparsifier):
        try:
            return bool(self._call("after_backward", step, model, sparsifier)) \
                if hasattr(self.inner, "after_backward") else False
        finally:
            self.execution._want_dense_grads(self, False)

    def state_dict(self):
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else {}

    def load_state_dict(self, state):
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state)
