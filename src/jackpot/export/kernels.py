"""Inference forms of a masked Linear: torch CSR, BSR (block masks), and row/column-pruned dense.

Each takes the weight with the mask already baked in (zeros = pruned) and computes exactly
x @ W.T + b. Indices are stored as int32: MKL's CSR kernels ran up to 2x faster with them here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sparse import sparse_linear  # noqa: F401  (spends torch's one sparse "beta" warning, quietly)

# Constructors pass check_invariants=False: the structures come from to_sparse_csr/_bsr.


def csr_parts(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(crow, col, values) of a 2-D weight's nonzeros, int32 indices."""
    csr = weight.detach().to_sparse_csr()
    return csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32), csr.values()


def csr_to_dense(crow, col, values, shape) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow.long(), col.long(), values, tuple(shape),
                                   check_invariants=False).to_dense()


def block_size(mask: torch.Tensor, sizes=(16, 4)) -> int | None:
    """The largest b in `sizes` such that every b x b block of the 2-D mask is fully on or off
    (and at least one block is off), else None."""
    out, inp = mask.shape
    for b in sizes:
        if out % b or inp % b:
            continue
        filled = mask.reshape(out // b, b, inp // b, b).sum((1, 3))
        if bool(((filled == 0) | (filled == b * b)).all()) and bool((filled == 0).any()):
            return b
    return None


class _Exported(nn.Module):
    """Shared shape handling: accept (..., in) like nn.Linear, compute on a 2-D view."""
    fmt = "?"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x):
        if x.dim() == 2:  # the common case, without reshapes: per-call overhead matters at batch 1
            return self._mm(x)
        return self._mm(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], self.out_features)

    def _cached(self, build):
        """The sparse matrix, rebuilt only when a buffer was replaced (.to(), load): building it
        costs 3-9 us, as much as a whole small sparse matvec."""
        key = (self.values.data_ptr(), self.crow.data_ptr(), self.col.data_ptr(), self.values.dtype)
        if getattr(self, "_key", None) != key:
            self._w, self._key = build(), key
        return self._w

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt}"


class CsrLinear(_Exported):
    """y = (W_csr @ x.T).T; torch.mv at batch 1 (MKL sparse BLAS on CPU)."""
    fmt = "csr"

    def __init__(self, weight, bias=None):
        super().__init__(weight, bias)
        crow, col, values = csr_parts(weight)
        self.register_buffer("crow", crow)
        self.register_buffer("col", col)
        self.register_buffer("values", values.clone())

    def _matrix(self):
        return torch.sparse_csr_tensor(self.crow, self.col, self.values,
                                       (self.out_features, self.in_features), check_invariants=False)

    def _mm(self, x):
        w = self._cached(self._matrix)
        if x.shape[0] == 1:
            y = torch.mv(w, x[0]) if self.bias is None else torch.addmv(self.bias, w, x[0])
            return y.unsqueeze(0)
        # The transposed result feeds the next CSR layer as a contiguous x.T for free.
        y = torch.mm(w, x.t()).t()
        return y if self.bias is None else y + self.bias

    def dense_weight(self):
        return csr_to_dense(self.crow, self.col, self.values, (self.out_features, self.in_features))


class BsrLinear(_Exported):
    """Block-sparse weight (all-or-nothing b x b blocks): y = (W_bsr @ x.T).T."""
    fmt = "bsr"

    def __init__(self, weight, bias=None, block: int = 4):
        super().__init__(weight, bias)
        self.fmt = f"bsr{block}"
        bsr = weight.detach().to_sparse_bsr((block, block))
        self.register_buffer("crow", bsr.crow_indices().to(torch.int32))
        self.register_buffer("col", bsr.col_indices().to(torch.int32))
        self.register_buffer("values", bsr.values().clone())

    def _matrix(self):
        return torch.sparse_bsr_tensor(self.crow, self.col, self.values, (self.out_features, self.in_features),
                                       check_invariants=False)

    def _mm(self, x):
        y = torch.mm(self._cached(self._matrix), x.t()).t()
        return y if self.bias is None else y + self.bias

    def dense_weight(self):
        return torch.sparse_bsr_tensor(self.crow.long(), self.col.long(), self.values,
                                       (self.out_features, self.in_features),
                                       check_invariants=False).to_dense()


class RowsLinear(_Exported):
    """A physically smaller dense layer: only output units with a weight (rows) and inputs that
    feed one (columns). Pruned outputs are just their bias."""
    fmt = "rows"

    def __init__(self, weight, bias=None):
        super().__init__(weight, bias)
        w = weight.detach()
        rows = w.ne(0).any(1).nonzero().flatten()
        cols = w.ne(0).any(0).nonzero().flatten()
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.register_buffer("sub", w[rows][:, cols].contiguous())
        self.all_rows = rows.numel() == self.out_features
        self.all_cols = cols.numel() == self.in_features

    def forward(self, x):
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        xs = x if self.all_cols else x.index_select(1, self.cols)
        if self.all_rows:
            y = F.linear(xs, self.sub, self.bias)
        else:
            ys = F.linear(xs, self.sub, None if self.bias is None else self.bias[self.rows])
            y = (x.new_zeros(x.shape[0], self.out_features) if self.bias is None
                 else self.bias.expand(x.shape[0], -1).clone())
            y.index_copy_(1, self.rows, ys)
        return y.reshape(*lead, self.out_features)

    def dense_weight(self):
        w = self.sub.new_zeros(self.out_features, self.in_features)
        w[self.rows.unsqueeze(1), self.cols.unsqueeze(0)] = self.sub
        return w


def dense_linear(weight, bias=None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin.requires_grad_(False)


def rows_applicable(weight) -> bool:
    nz = weight.ne(0)
    return not (bool(nz.any(1).all()) and bool(nz.any(0).all()))


def build_linear(fmt: str, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """The inference module of format `fmt` for a baked (zero-filled) weight."""
    if fmt == "dense":
        return dense_linear(weight, bias)
    if fmt == "csr":
        return CsrLinear(weight, bias)
    if fmt == "rows":
        return RowsLinear(weight, bias)
    if fmt.startswith("bsr"):
        return BsrLinear(weight, bias, block=int(fmt[3:]))
    raise ValueError(f"unknown linear format {fmt!r}")


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The dense (zero-filled) weight of any exported linear form."""
    return module.weight.detach() if isinstance(module, nn.Linear) else module.dense_weight()
