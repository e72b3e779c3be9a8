"""User-supplied datasets: one .npz with x_train, y_train, x_test, y_test."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from jackpot.data.prepare import RawSplits
from jackpot.errors import JackpotError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> RawSplits:
    """Validate and read a user .npz. x: (N, ...) numeric (uint8 counts as pixels -> [0, 1]), both
    splits non-empty; y: (N,) integer labels in 0..max(y_train), the class count max(y_train) + 1
    (at least half of those classes must occur in y_train, see _class_count)."""
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
    for s in ("train", "test"):  # an empty test split would score every run 0%
        if len(xs[s]) == 0:
            raise JackpotError(f"npz file {path}: x_{s} is empty (it needs at least one example)")
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise JackpotError(f"npz file {path}: x_train examples {xs['train'].shape[1:]} and x_test "
                           f"examples {xs['test'].shape[1:]} differ in shape")
    num_classes = _class_count(ys["train"], path)
    if ys["test"].size and ys["test"].max() >= num_classes:
        raise JackpotError(f"npz file {path}: y_test has label {int(ys['test'].max())} but y_train "
                           f"only covers 0..{num_classes - 1}")
    return RawSplits(xs["train"], ys["train"], xs["test"], ys["test"], num_classes)


def _class_count(y_train: np.ndarray, path: Path) -> int:
    """K = largest training label + 1 (labels are class indices 0..K-1), refused when fewer than
    half of those K classes occur in y_train: one stray label (5000000, 2**31) would otherwise
    build a model with millions of outputs, or fail for lack of memory with an unrelated message."""
    top, present = int(y_train.max()), int(np.unique(y_train).size)
    if 2 * present < top + 1:
        raise JackpotError(f"npz file {path}: y_train's largest label {top} means {top + 1} classes, but only "
                           f"{present} of the labels 0..{top} occur; labels must be class indices 0..K-1 with at "
                           "least half of them present (renumber them, e.g. numpy.unique(y, return_inverse=True))")
    return top + 1


def _features(x: np.ndarray, path: Path, split: str) -> np.ndarray:
    if x.dtype.kind not in "uifb":
        raise JackpotError(f"npz file {path}: x_{split} has non-numeric dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]  # one scalar feature per example
    if x.ndim == 0:
        raise JackpotError(f"npz file {path}: x_{split} must have shape (N, ...)")
    if x.dtype == np.uint8:  # pixels: kept compact, scaled to [0, 1] per batch (Dataset.inputs)
        return np.ascontiguousarray(x)
    out = x.astype(np.float32)
    if not np.isfinite(out).all():
        raise JackpotError(f"npz file {path}: x_{split} contains NaN or inf")
    return out


def _labels(y: np.ndarray, path: Path, split: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "ui":
        raise JackpotError(f"npz file {path}: y_{split} must be 1-D integer labels, "
                           f"got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise JackpotError(f"npz file {path}: y_{split} has negative label {int(y.min())}")
    if y.size and int(y.max()) > np.iinfo(np.int64).max:  # uint64 beyond int64 would wrap negative
        raise JackpotError(f"npz file {path}: y_{split} has label {int(y.max())}, too large for a class index")
    return y.astype(np.int64)
