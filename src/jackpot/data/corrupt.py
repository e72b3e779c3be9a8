"""Data corruptions for the mask-finding stage of the sanity checks (Su et al. 2020).

Each is seeded and follows its paper:
  random-labels  exactly round(fraction * N) training examples (all of them by default) get a label
                 drawn uniformly from *all* classes, the true class included, so the labels carry no
                 information about the inputs (Zhang et al. 2017 "corrupt_prob"; Su et al. 2020
                 sanity checks, `corrupt_prob=1`). About 1/K of the drawn labels equal the true
                 one by chance; a network trained on them scores chance level on clean test data.
  random-pixels  random labels as above plus an independent random permutation of each training
                 example's values (Zhang et al. 2017 "random pixels"; Su et al. 2020);
  half           exactly round(fraction * N) training examples (a half by default), chosen without
                 replacement (Su et al. 2020 train the dense network on half of CIFAR-10).
Test data is never corrupted.
"""
from __future__ import annotations

import torch

from ..errors import JackpotError, check_fraction
from .dataset import Dataset

CORRUPTIONS = ("random-labels", "random-pixels", "half")


def check_corruption(name: str, fraction: float | None) -> None:
    """A config's --corrupt and --corrupt-fraction, refused before anything runs."""
    if not name:
        return
    if name not in CORRUPTIONS:
        raise JackpotError(f"unknown corruption {name!r}; choose {', '.join(CORRUPTIONS)}")
    if fraction is not None:
        check_fraction(fraction, "--corrupt-fraction")


def random_labels(y: torch.Tensor, num_classes: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Exactly round(fraction * N) labels redrawn uniformly over all classes (true class included)."""
    n = y.shape[0]
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=generator)[:k]
    out = y.clone()
    out[idx] = torch.randint(0, num_classes, (k,), generator=generator, dtype=y.dtype)
    return out


def permute_features(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    perms = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1)
    return torch.gather(flat, 1, perms).reshape(x.shape)


def corrupt(ds: Dataset, kind: str, fraction: float, generator: torch.Generator) -> Dataset:
    check_corruption(kind, fraction)
    if ds.num_classes < 2 and kind != "half":
        raise JackpotError("label corruption needs at least 2 classes")
    if kind == "random-labels":
        return ds.with_train(ds.x_train, random_labels(ds.y_train, ds.num_classes, fraction, generator))
    if kind == "random-pixels":
        # permute the normalised values (per-channel statistics must not follow a pixel elsewhere)
        return ds.with_train(permute_features(ds.inputs(ds.x_train), generator),
                             random_labels(ds.y_train, ds.num_classes, 1.0, generator))
    keep = torch.randperm(ds.num_train, generator=generator)[: max(1, int(round(fraction * ds.num_train)))]
    keep = keep.sort().values
    return ds.with_train(ds.x_train[keep], ds.y_train[keep])
