"""FLOPs and model-size accounting as in the RigL paper (Evci et al. 2020, appendix H).

Conventions (RigL ``sparse_utils.get_stats`` on top of MicroNet ``counting.count_ops``; dst.md §2.6):

* FLOPs = multiplications + additions ("mult + add"), for ONE example. A dot product of length n with a
  bias costs n mults + (n - 1) adds + 1 bias add = 2n; RigL declares every conv/dense layer with
  ``use_bias=True``, so each kept weight costs exactly 2 FLOPs per output position, bias or not:
  conv = 2 * nnz(weight) * H_out * W_out (Conv1d: L_out, Conv3d: D*H*W), linear = 2 * nnz(weight).
  Sparse FLOPs use the mask's nnz; activations stay dense (MicroNet: "activations are dense").
* Only conv/linear layers are counted, as RigL's ``get_stats`` does (it walks the Conv2D/Dense layers
  only): BatchNorm, pooling, residual adds and the loss are omitted. One difference: get_stats also
  charges a ReLU (1 op) on each output of every layer; that is ``sum(row["outputs"])`` over
  ``layer_flops`` (about 0.1% of ResNet-50) and is left out here.
  Dense ResNet-50 at 3x224x224 gives 8.18e9 (paper: 8.2e9).
* Training FLOPs per example (appendix H; backward = 2x forward): see ``training_flops``.
  Dense ResNet-50, 32k steps at batch 4096: 3 * 8.2e9 * 4096 * 32000 = 3.2e18 (paper).
* Size in bits (MicroNet ``get_sparse_size``): a tensor costs numel * 32 dense, and nnz * 32 + numel
  (a 1-bit mask) once any entry is pruned.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .errors import JackpotError
from .models.layers import WEIGHT_LAYERS


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _check_mask(masks, name: str, param: torch.Tensor) -> torch.Tensor | None:
    if masks is None or name not in masks:
        return None
    mask = masks[name]
    if tuple(mask.shape) != tuple(param.shape):
        raise JackpotError(f"mask for {name} has shape {tuple(mask.shape)}, the parameter has "
                           f"{tuple(param.shape)}")
    return mask


def _positions(model: nn.Module, input_shape: Sequence[int], layers: dict[str, nn.Module]) -> dict[str, int]:
    """Output positions per example of each layer, from one forward pass on a batch of 1 zeros."""
    counts = dict.fromkeys(layers, 0)

    def hook(name):
        def record(mod, inputs, out):
            channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
            counts[name] += out.numel() // channels  # += : a layer called twice costs twice
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    modes = {m: m.training for m in model.modules()}  # restored exactly, per module
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        model.eval()  # eval: BatchNorm running stats are not touched, dropout is off
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype,
                              device=param.device if param is not None else None))
    except (RuntimeError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise JackpotError(f"forward pass on input shape {tuple(input_shape)} failed: {first}") from e
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return counts


def layer_flops(model: nn.Module, input_shape: Sequence[int], masks=None) -> list[dict]:
    """Per conv/linear layer (module order): name, kind, shape, params, nnz, positions (output
    positions per example), outputs (output elements per example), dense and sparse FLOPs of one
    example's inference. ``masks`` maps "<layer>.weight" to a bool tensor; unmasked layers are dense."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)}
    positions = _positions(model, input_shape, layers)
    rows = []
    for name, mod in layers.items():
        mask = _check_mask(masks, _prefix(name) + "weight", mod.weight)
        params = mod.weight.numel()
        nnz = params if mask is None else int(mask.sum())
        pos = positions[name]
        channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
        rows.append({"name": name, "kind": type(mod).__name__, "shape": list(mod.weight.shape),
                     "params": params, "nnz": nnz, "positions": pos, "outputs": pos * channels,
                     "dense": 2 * params * pos, "sparse": 2 * nnz * pos})
    return rows


def inference_flops(model: nn.Module, input_shape: Sequence[int], masks=None) -> dict:
    """Totals over ``layer_flops``: {"dense", "sparse", "ratio"} (ratio = sparse / dense)."""
    rows = layer_flops(model, input_shape, masks)
    dense = sum(r["dense"] for r in rows)
    sparse = sum(r["sparse"] for r in rows)
    if dense == 0:
        raise JackpotError(f"{type(model).__name__} runs no conv or linear layer: nothing to count")
    return {"dense": dense, "sparse": sparse, "ratio": sparse / dense}


# Per-example training FLOPs of one step (RigL appendix H). f_D dense, f_S sparse inference FLOPs.
_PER_EXAMPLE = {
    "dense": lambda fd, fs, dt: 3 * fd,
    "static": lambda fd, fs, dt: 3 * fs,  # fixed mask: sparse forward and backward
    "snip": lambda fd, fs, dt: 3 * fs,
    "set": lambda fd, fs, dt: 3 * fs,  # random growth needs no dense gradient
    "small-dense": lambda fd, fs, dt: 3 * fs,  # f_sparse = the small dense model's FLOPs
    "snfs": lambda fd, fs, dt: 2 * fs + fd,  # dense gradient (momentum) every step
    "rigl": lambda fd, fs, dt: (3 * fs * dt + 2 * fs + fd) / (dt + 1),  # dense gradient every dt steps
}
_SCHEDULED = ("pruning", "gmp", "imp")  # the cost follows the density schedule
METHODS = tuple(_PER_EXAMPLE) + _SCHEDULED


def training_flops(method: str, f_dense: float, f_sparse: float, steps: int, batch: int, *,
                   delta_t: int = 100,
                   density_schedule: Callable[[int], float] | Sequence[float] | None = None) -> float:
    """Total training FLOPs of ``steps`` steps at batch ``batch`` (RigL appendix H):

    dense 3 f_D; static/snip/set 3 f_S; small-dense 3 f_small (pass it as f_sparse); snfs 2 f_S + f_D;
    rigl (3 f_S dt + 2 f_S + f_D) / (dt + 1), over all steps as in the paper; pruning/gmp/imp:
    sum over steps t of 3 f(t), the real schedule (RigL's colab evaluates it every 1000 steps;
    appendix N fixes the formula's typo). ``density_schedule`` gives f(t), the inference FLOPs per
    example at step t, as a callable or a list of ``steps`` values; for imp, ``steps`` counts
    every step of every round. Each result is multiplied by ``batch``.
    """
    if method not in METHODS:
        raise JackpotError(f"unknown training method {method!r}; valid: {', '.join(METHODS)}")
    if steps < 0 or batch < 0 or f_dense < 0 or f_sparse < 0:
        raise JackpotError("steps, batch and FLOPs must be non-negative")
    if method in _SCHEDULED:
        if density_schedule is None:
            raise JackpotError(f"{method} needs density_schedule (FLOPs per example at each step)")
        if callable(density_schedule):
            per_step = [density_schedule(t) for t in range(steps)]
        else:
            per_step = list(density_schedule)
            if len(per_step) != steps:
                raise JackpotError(f"density_schedule has {len(per_step)} values for {steps} steps")
        return float(sum(3 * f for f in per_step) * batch)
    if delta_t < 1:
        raise JackpotError(f"delta_t must be >= 1, got {delta_t}")
    return float(_PER_EXAMPLE[method](f_dense, f_sparse, delta_t) * steps * batch)


def model_size_bits(model: nn.Module, masks=None, param_bits: int = 32) -> dict:
    """Bits to store every parameter (MicroNet/RigL): numel * param_bits for a dense tensor,
    nnz * param_bits + numel (1-bit mask) for a tensor with any entry pruned.
    Returns {"params", "nnz", "dense", "sparse", "ratio"} (dense/sparse in bits).

    RigL's get_stats counts conv/dense kernels plus a bias per output channel on every layer; here
    the model's real parameters are counted (biases only where present, BatchNorm affine included).
    """
    params = dict(model.named_parameters())
    if masks is not None:
        for name in masks:
            if name not in params:
                raise JackpotError(f"mask names parameter {name!r}, which the model does not have")
    total = nnz_total = dense = sparse = 0
    for name, p in params.items():
        mask = _check_mask(masks, name, p)
        n = p.numel()
        nnz = n if mask is None else int(mask.sum())
        total, nnz_total = total + n, nnz_total + nnz
        dense += n * param_bits
        sparse += nnz * param_bits + (n if nnz < n else 0)  # the mask is stored only when it prunes
    return {"params": total, "nnz": nnz_total, "dense": dense, "sparse": sparse,
            "ratio": sparse / dense if dense else 1.0}


def examples_at(step: int, num_train: int, batch: int) -> int:
    """Examples in the batch of `step` (the last batch of an epoch may be short)."""
    per_epoch = -(-num_train // batch)
    return min(batch, num_train - (step % per_epoch) * batch)


class TrainingFlopsMeter:
    """Training FLOPs of the steps that really ran, as a training-loop callback.

    RigL appendix H, applied step by step instead of to an assumed schedule: a step costs, per
    example, 3 f_S(t) (sparse forward, sparse backward) or 2 f_S(t) + f_D when it needs the dense
    gradient (RigL on its update steps and the batches accumulated for them, SNFS on every step).
    f_S(t) is the inference FLOPs of the masks in effect at step t's forward, so GMP is charged
    for the masks it really used between its updates and RigL for the updates it really made
    (none after t_end). Runs after the mask callbacks' on_step_start; its total is checkpointed
    and lands in the stage's done.json as `train_flops`.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], num_train: int, batch: int,
                 dense_gradient_at: Callable[[int], bool] | None = None):
        rows = layer_flops(model, input_shape)
        self._per_weight = {_prefix(r["name"]) + "weight": 2 * r["positions"] for r in rows}
        self.f_dense = float(sum(r["dense"] for r in rows))
        self.num_train, self.batch = num_train, batch
        self.dense_gradient_at = dense_gradient_at or (lambda step: False)
        self.total = 0.0
        self._seen, self._f_sparse = None, self.f_dense

    def _sparse_flops(self, masks) -> float:
        if masks is not self._seen:  # masks change only at updates: recount then
            self._seen = masks
            self._f_sparse = self.f_dense - sum(
                self._per_weight[n] * (m.numel() - int(torch.count_nonzero(m))) for n, m in masks.items()
                if n in self._per_weight)
        return self._f_sparse

    def on_step_start(self, step: int, model, sparsifier) -> None:
        f_s = self._sparse_flops(sparsifier.masks) if sparsifier is not None else self.f_dense
        per_example = 2 * f_s + self.f_dense if self.dense_gradient_at(step) else 3 * f_s
        self.total += examples_at(step, self.num_train, self.batch) * per_example

    def state_dict(self) -> dict:
        return {"train_flops": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.total = float(state.get("train_flops", 0.0))

    def summary(self) -> dict:
        return {"train_flops": self.total}
