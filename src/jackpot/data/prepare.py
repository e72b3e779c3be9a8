"""Turn raw numpy splits into a normalised `Dataset`: optional validation carve-out, then scaling."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from jackpot.data.dataset import Dataset, pixels
from jackpot.data.normalize import channel_stats, standardize
from jackpot.errors import JackpotError


class RawSplits(NamedTuple):
    """What every reader returns: x as float32, or as uint8 pixels (value / 255 in [0, 1]); y int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def carve_validation(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int):
    """Split (x, y) into (train, val) with a permutation seeded by `seed`; both keep original order."""
    n = int(x.shape[0])
    if val_size < 0:
        raise JackpotError(f"val_size must be >= 0, got {val_size}")
    if val_size >= n:
        raise JackpotError(f"val_size={val_size} must be smaller than the {n} training examples")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    # Sorting keeps the stored order inside each part, so val_size=0 and >0 runs differ only by the carve.
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def build_dataset(name: str, raw: RawSplits, augment: str | None = None,
                  val_size: int = 0, seed: int = 0, standardize_inputs: bool = True) -> Dataset:
    x_train, x_test = _stored(raw.x_train), _stored(raw.x_test)
    y_train = torch.from_numpy(np.ascontiguousarray(raw.y_train, dtype=np.int64))
    y_test = torch.from_numpy(np.ascontiguousarray(raw.y_test, dtype=np.int64))
    x_val = y_val = None
    if val_size:
        (x_train, y_train), (x_val, y_val) = carve_validation(x_train, y_train, val_size, seed)
    mean = std = None
    # Statistics come from the (remaining) training data only, so val/test never leak into them.
    if standardize_inputs and x_train.dtype == torch.uint8:
        # uint8 pixels stay uint8 (a quarter of float32); Dataset.inputs scales and standardises
        # each batch with the same arithmetic, so the network sees the same bits as before
        mean, std = channel_stats(pixels(x_train))
    elif standardize_inputs:
        x_train, x_test, x_val = standardize(x_train, x_test, x_val)
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   num_classes=int(raw.num_classes), augment=augment, x_val=x_val, y_val=y_val, mean=mean, std=std)


def _stored(x: np.ndarray) -> torch.Tensor:
    """uint8 pixels as they are, anything else as float32."""
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
