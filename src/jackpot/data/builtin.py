"""Datasets that need no download: the shipped MNIST-1D split and scikit-learn's digits."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jackpot.data.prepare import RawSplits
from jackpot.errors import JackpotError

MNIST1D_FILE = Path(__file__).with_name("mnist1d.npz")
DIGITS_TRAIN = 1437  # the customary 80/20 split of the 1797 images
DIGITS_SEED = 0


def load_mnist1d() -> RawSplits:
    """The standard 4000/1000 MNIST-1D split, generated once and shipped (see MNIST1D_LICENSE.txt)."""
    if not MNIST1D_FILE.is_file():
        raise JackpotError(f"the shipped MNIST-1D file is missing: {MNIST1D_FILE} (reinstall jackpot)")
    with np.load(MNIST1D_FILE, allow_pickle=False) as f:
        return RawSplits(f["x_train"].astype(np.float32), f["y_train"].astype(np.int64),
                         f["x_test"].astype(np.float32), f["y_test"].astype(np.int64), 10)


def load_digits() -> RawSplits:
    """scikit-learn's 8x8 digits, split 1437/360 with a fixed permutation, pixels scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise JackpotError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_load_digits()
    x = np.asarray(bunch.data, dtype=np.float32).reshape(-1, 1, 8, 8) / 16.0  # values are 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    # A fixed seed (not the user's seed) so "digits" always means the same test set.
    perm = np.random.RandomState(DIGITS_SEED).permutation(len(x))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    return RawSplits(x[tr], y[tr], x[te], y[te], 10)
