"""Standardisation with statistics from the training split only."""
from __future__ import annotations

import torch


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std per channel (dim 1) for (N, C, ...) data; one global pair for flat (N, F) data.

    Flat data is treated as one signal (e.g. MNIST-1D), so a single mean/std keeps the relative
    scale between positions intact. Float64 accumulation avoids drift on 50k-image sets.
    """
    xd = x.double()
    if x.dim() <= 2:
        mean, std = xd.mean(), xd.std()
        shape = [1] * x.dim()
    else:
        dims = [0] + list(range(2, x.dim()))
        mean, std = xd.mean(dim=dims), xd.std(dim=dims)
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant inputs: centre only
    return mean.float().reshape(shape), std.float().reshape(shape)


def standardize(x_train: torch.Tensor, *others: torch.Tensor | None):
    """Return (x_train, *others) standardised with x_train's statistics; None passes through."""
    mean, std = channel_stats(x_train)
    out = [(x_train - mean) / std]
    out += [None if x is None else (x - mean) / std for x in others]
    return tuple(out)
