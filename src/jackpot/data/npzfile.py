"""User-supplied datasets: one .npz with x_train, y_train, x_test, y_test."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from jackpot.data.prepare import RawSplits
from jackpot.errors import JackpotError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> RawSplits:
    """Validate and read a user .npz. x: (N, ...) numeric (uint8 counts as pixels -> [0, 1]);
    y: (N,) integer labels in 0..max(y_train)."""
    if not path.is_file():
        raise JackpotError(f"npz file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            absent = [k for k in NPZ_KEYS if k not in f.files]
            if absent:
                raise JackpotError(f"npz file {path} lacks {', '.join(absent)} "
                                   f"(needs {', '.join(NPZ_KEYS)})")
            arrays = {k: f[k] for k in NPZ_KEYS}
    except JackpotError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise JackpotError(f"corrupt npz file {path}: {type(e).__name__}: {e}") from None

    xs = {s: _features(arrays[f"x_{s}"], path, s) for s in ("train", "test")}
    ys = {s: _labels(arrays[f"y_{s}"], path, s) for s in ("train", "test")}
    for s in ("train", "test"):
        if len(xs[s]) != len(ys[s]):
            raise JackpotError(f"npz file {path}: x_{s} has {len(xs[s])} rows but y_{s} has {len(ys[s])}")
    if len(xs["train"]) == 0:
        raise JackpotError(f"npz file {path}: x_train is empty")
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise JackpotError(f"npz file {path}: x_train examples {xs['train'].shape[1:]} and x_test "
                           f"examples {xs['test'].shape[1:]} differ in shape")
    num_classes = int(ys["train"].max()) + 1
    if ys["test"].size and ys["test"].max() >= num_classes:
        raise JackpotError(f"npz file {path}: y_test has label {int(ys['test'].max())} but y_train "
                           f"only covers 0..{num_classes - 1}")
    return RawSplits(xs["train"], ys["train"], xs["test"], ys["test"], num_classes)


def _features(x: np.ndarray, path: Path, split: str) -> np.ndarray:
    if x.dtype.kind not in "uifb":
        raise JackpotError(f"npz file {path}: x_{split} has non-numeric dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]  # one scalar feature per example
    if x.ndim == 0:
        raise JackpotError(f"npz file {path}: x_{split} must have shape (N, ...)")
    out = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if not np.isfinite(out).all():
        raise JackpotError(f"npz file {path}: x_{split} contains NaN or inf")
    return out


def _labels(y: np.ndarray, path: Path, split: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "ui":
        raise JackpotError(f"npz file {path}: y_{split} must be 1-D integer labels, "
                           f"got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise JackpotError(f"npz file {path}: y_{split} has negative label {int(y.min())}")
    return y.astype(np.int64)
