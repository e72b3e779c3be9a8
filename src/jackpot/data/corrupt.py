"""Data corruptions for the mask-finding stage of the sanity checks (Su et al. 2020).

Each is seeded and exact:
  random-labels  exactly round(fraction * N) training labels replaced by a *different* class drawn
                 uniformly (so the fraction changed is exact; the paper's draw may coincide);
  random-pixels  every training example's features permuted by its own random permutation, plus
                 all labels randomised as above (the paper's "random pixels");
  half           a random half (or `fraction`) of the training examples, without replacement.
Test data is never corrupted.
"""
from __future__ import annotations

import torch

from ..errors import JackpotError
from .dataset import Dataset

CORRUPTIONS = ("random-labels", "random-pixels", "half")


def random_labels(y: torch.Tensor, num_classes: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    n = y.shape[0]
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=generator)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=generator)  # never the same class
    out = y.clone()
    out[idx] = (y[idx] + shift) % num_classes
    return out


def permute_features(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    perms = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1)
    return torch.gather(flat, 1, perms).reshape(x.shape)


def corrupt(ds: Dataset, kind: str, fraction: float, generator: torch.Generator) -> Dataset:
    if kind not in CORRUPTIONS:
        raise JackpotError(f"unknown corruption {kind!r}; choose {', '.join(CORRUPTIONS)}")
    if not 0.0 < fraction <= 1.0:
        raise JackpotError(f"--corrupt-fraction must be in (0, 1], got {fraction}")
    if ds.num_classes < 2 and kind != "half":
        raise JackpotError("label corruption needs at least 2 classes")
    if kind == "random-labels":
        return ds.with_train(ds.x_train, random_labels(ds.y_train, ds.num_classes, fraction, generator))
    if kind == "random-pixels":
        return ds.with_train(permute_features(ds.x_train, generator),
                             random_labels(ds.y_train, ds.num_classes, 1.0, generator))
    keep = torch.randperm(ds.num_train, generator=generator)[: max(1, int(round(fraction * ds.num_train)))]
    keep = keep.sort().values
    return ds.with_train(ds.x_train[keep], ds.y_train[keep])
