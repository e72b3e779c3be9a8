"""SparseLinear: a trainable linear layer that stores and updates only its active weights.

Forward y = x W^T + b and the input gradient use MKL CSR products; the weight gradient is
computed only at active positions (sampled dense-dense product, SDDMM). Outputs and gradients
equal those of F.linear(x, W * mask) within float tolerance. With `capture_dense_grad` set, a
backward also stores the dense weight gradient (one dense product, for a DST update that reads
it: sparse/execution.py). Every index buffer lives on the device of the weight. bf16/fp16 layers compute the three products in float32 (MKL's CSR kernels
and CUDA's sampled_addmm take only float32/64) and round the results back.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from ..errors import JackpotError
from .masks import flat_nonzero

# torch warns once per process that sparse CSR is "beta": use that one warning up here, quietly
# (export's kernels import this module for the same reason).
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.zeros(1, 1).to_sparse_csr()


def _csr(crow, col, values, shape):
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float32 for bf16/fp16 (no CSR product kernel takes them everywhere), else t itself."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class _Structure(NamedTuple):
    crow: torch.Tensor
    col: torch.Tensor
    crow_t: torch.Tensor
    col_t: torch.Tensor
    perm_t: torch.Tensor
    shape: tuple[int, int]


class _SparseMatmul(torch.autograd.Function):
    """x (B, in), values (nnz,) -> x W^T (B, out) for the CSR structure held by `layer`."""

    @staticmethod
    def forward(ctx, x, values, layer):
        # Keep this step's structure: an update_mask before backward must not change it.
        ctx.layer = _Structure(layer.crow, layer.col, layer.crow_t, layer.col_t, layer.perm_t, layer.shape)
        ctx.capture = layer if layer.capture_dense_grad else None
        ctx.save_for_backward(x, values)
        w, xw = _csr(layer.crow, layer.col, _wide(values), layer.shape), _wide(x)
        with torch.autocast(x.device.type, enabled=False):  # autocast would cast to bf16: no CSR kernel
            if x.shape[0] == 1:
                return torch.mv(w, xw[0]).unsqueeze(0).to(x.dtype)
            return torch.mm(w, xw.t()).t().to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # a backward called under the run's autocast (bf16 on a CPU) would cast these products to
        # bf16 too, which no CSR kernel takes: they run in float32, as the forward's do
        with torch.autocast(grad_out.device.type, enabled=False):
            return _SparseMatmul._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x, values = ctx.saved_tensors
        layer = ctx.layer
        grad_x = grad_values = None
        g = _wide(grad_out)
        if ctx.needs_input_grad[0]:
            # dL/dx = g W, computed as (W^T g^T)^T with the transposed CSR built once per structure.
            wt = _csr(layer.crow_t, layer.col_t, torch.index_select(_wide(values), 0, layer.perm_t), layer.shape[::-1])
            grad_x = torch.mm(wt, g.t()).t().to(x.dtype)
        if ctx.needs_input_grad[1]:
            # dL/dW[r, c] = sum_b g[b, r] x[b, c], only at the nnz positions (values are
            # ignored with beta=0; zeros keep inf/nan weights from leaking in).
            pattern = _csr(layer.crow, layer.col, torch.zeros_like(_wide(values)), layer.shape)
            grad_values = torch.sparse.sampled_addmm(
                pattern, g.t().contiguous(), _wide(x).contiguous(), beta=0.0).values().to(values.dtype)
        if ctx.capture is not None:  # dL/dW at every position, as a masked dense layer's autograd has it
            dense = torch.mm(g.t(), _wide(x)).to(values.dtype)
            prev = ctx.capture.dense_grad
            ctx.capture.dense_grad = dense if prev is None else prev + dense
        return grad_x, grad_values, None


class SparseLinear(nn.Module):
    """Linear layer whose weight is `values` (nnz,) at the positions of a fixed CSR structure.

    Use in place of nn.Linear. After a DST drop/grow, call update_mask(new_mask): kept weights
    keep their values, grown ones start at 0. The `values` Parameter object stays the same, but
    its size changes, so optimizer state (momentum) must be remapped with the returned indices.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.values = nn.Parameter(torch.zeros(0))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.capture_dense_grad = False  # backward also stores the dense weight gradient ...
        self.dense_grad: torch.Tensor | None = None  # ... here (summed over backwards until cleared)
        self._set_structure(torch.zeros(out_features, in_features, dtype=torch.bool), torch.zeros(0))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: torch.Tensor | None = None) -> "SparseLinear":
        """Active positions = mask (default: the nonzeros of linear.weight). The layer takes the
        weight's device and dtype; a mask on another device is moved there."""
        w = linear.weight.detach()
        mask = w.ne(0) if mask is None else mask.to(device=w.device, dtype=torch.bool)
        if tuple(mask.shape) != tuple(w.shape):
            raise JackpotError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(w.shape)}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.to(device=w.device, dtype=w.dtype)
        flat = flat_nonzero(mask)  # row-major order = CSR order
        layer._set_structure(mask, w.reshape(-1)[flat], flat=flat)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    def _set_structure(self, mask: torch.Tensor, values: torch.Tensor, flat: torch.Tensor | None = None) -> None:
        """Index buffers of the CSR structure of `mask` (or of its sorted flat positions `flat`,
        when the caller has them) and of its transpose (for dL/dx), all on the device of
        `self.values` (the weight's), as are the new values."""
        dev = self.values.device
        out, inp = self.shape
        flat = mask.to(device=dev, dtype=torch.bool).flatten().nonzero().squeeze(1) if flat is None else flat.to(dev)
        rows, cols = flat.div(inp, rounding_mode="floor"), flat.remainder(inp)  # CSR order
        i32 = torch.int32  # MKL's CSR kernels are faster with 32-bit indices
        cols32 = cols.to(i32)
        # crow[r] = number of entries in rows < r (searchsorted, not bincount: that syncs on CUDA)
        crow = torch.searchsorted(rows, torch.arange(out + 1, device=dev))
        # CSR order of W^T (by column, then row): rows are sorted already, so a stable sort by
        # column alone (of int32 keys: 3x faster than of a combined int64 key)
        perm_t = torch.argsort(cols32, stable=True)
        crow_t = torch.searchsorted(cols[perm_t], torch.arange(inp + 1, device=dev))
        for name, t in (("crow", crow.to(i32)), ("col", cols32), ("crow_t", crow_t.to(i32)),
                        ("col_t", rows[perm_t].to(i32)), ("perm_t", perm_t)):
            self.register_buffer(name, t)
        new = values.detach().clone().to(device=dev, dtype=self.values.dtype)
        if new.shape != self.values.shape:
            # A graph still alive (last step's `loss`) keeps the gradient accumulator of `values`,
            # sized for the old count: the next backward would fail. torch drops it when the dtype
            # changes, so pass through another dtype first.
            self.values.data = new.new_empty(0, dtype=torch.float32 if new.dtype == torch.float64 else torch.float64)
        self.values.data = new
        self.values.grad = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict of another structure (a checkpoint after DST updates) loads too: the
        structure is rebuilt from its indices first."""
        crow, col = state_dict.get(prefix + "crow"), state_dict.get(prefix + "col")
        values = state_dict.get(prefix + "values")
        if crow is not None and col is not None and values is not None and values.shape != self.values.shape:
            mask = torch.zeros(self.shape, dtype=torch.bool, device=self.values.device)
            rows = torch.repeat_interleave(torch.arange(self.out_features), crow.long().cpu().diff())
            mask[rows.to(mask.device), col.long().to(mask.device)] = True
            self._set_structure(mask, values)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.values.device)
        m[self.rows(), self.col.long()] = True
        return m

    def rows(self) -> torch.Tensor:
        # output_size: no host sync on CUDA
        return torch.repeat_interleave(torch.arange(self.out_features, device=self.crow.device),
                                       self.crow.long().diff(), output_size=self.col.numel())

    def dense_weight(self) -> torch.Tensor:
        w = self.values.new_zeros(self.shape)
        w[self.rows(), self.col.long()] = self.values.detach()
        return w

    def to_dense(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.dense_weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def flat_positions(self) -> torch.Tensor:
        """The active positions as flat (row-major) indices of the dense weight, in values' order."""
        return self.rows() * self.in_features + self.col.long()

    def update_mask(self, new_mask: torch.Tensor, init: str = "zero",
                    flat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebuild the structure for `new_mask`. Returns (src, dst): new_values[dst] = old_values[src]
        for the kept weights, so callers can carry optimizer state across (the new positions are
        `flat_positions()`). `flat`: new_mask's flat positions (ascending) when the caller has them."""
        if init != "zero":
            raise JackpotError(f"update_mask: unknown init {init!r} (supported: zero)")
        new_mask = new_mask.to(device=self.values.device, dtype=torch.bool)
        if tuple(new_mask.shape) != self.shape:
            raise JackpotError(f"mask shape {tuple(new_mask.shape)} != weight shape {self.shape}")
        old_flat = self.flat_positions()  # sorted (row-major)
        new_flat = flat_nonzero(new_mask) if flat is None else flat.to(device=self.values.device, dtype=torch.long)
        if new_flat.numel():
            pos = torch.searchsorted(new_flat, old_flat).clamp(max=new_flat.numel() - 1)
            src = (new_flat[pos] == old_flat).nonzero().flatten()
        else:
            pos = src = old_flat[:0]
        dst = pos[src]
        values = self.values.new_zeros(new_flat.numel())
        values[dst] = self.values.detach()[src]
        self._set_structure(new_mask, values, flat=new_flat)
        return src, dst

    def forward(self, x):
        lead = x.shape[:-1]
        y = _SparseMatmul.apply(x.reshape(-1, self.in_features), self.values, self)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.values.numel()}, bias={self.bias is not None}")
