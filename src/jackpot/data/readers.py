"""Numpy readers for torchvision's on-disk layouts: MNIST-style IDX files and CIFAR python pickles."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from jackpot.data.prepare import RawSplits
from jackpot.errors import JackpotError

# IDX type codes (http://yann.lecun.com/exdb/mnist/): the byte after the two leading zeros.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
CIFAR_LAYOUT = {  # name -> (folder, train files, test files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def missing(name: str, path: Path, root: Path) -> JackpotError:
    return JackpotError(f"dataset '{name}' not found: missing {path}; "
                        f"download it with `jackpot data fetch {name} --root {root}`")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (raw or .gz) into an array of its declared shape."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise JackpotError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise JackpotError(f"not an IDX file (bad magic number): {path}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise JackpotError(f"truncated IDX header: {path}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise JackpotError(f"IDX file {path} holds {len(data) - header} data bytes, "
                           f"its header {shape} says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(raw_dir: Path, stem: str, name: str, root: Path) -> Path:
    # torchvision keeps both the .gz and the extracted file; either will do.
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise missing(name, raw_dir / f"{stem}[.gz]", root)


def read_mnist_like(name: str, root: Path) -> RawSplits:
    """MNIST / Fashion-MNIST from <root>/<MNIST|FashionMNIST>/raw/, as (N, 1, 28, 28) uint8 pixels."""
    raw_dir = root / MNIST_FOLDERS[name] / "raw"
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_file(raw_dir, f"{prefix}-images-idx3-ubyte", name, root))
        labels = read_idx(_idx_file(raw_dir, f"{prefix}-labels-idx1-ubyte", name, root))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise JackpotError(f"{name} {split} files in {raw_dir} disagree: images {images.shape}, "
                               f"labels {labels.shape}")
        arrays[split] = (np.ascontiguousarray(images[:, None], dtype=np.uint8), _labels(labels, 10, name, raw_dir))
    return RawSplits(*arrays["train"], *arrays["test"], 10)


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR pickles hold only dicts, lists and numpy arrays; refuse anything that could run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}  # protocol-2 pickles from Python 3 store bytes this way

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the official files are Python 2 pickles with byte-string keys.
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise JackpotError(f"cannot read CIFAR batch {path}: {e}") from None
    if not isinstance(d, dict):
        raise JackpotError(f"CIFAR batch {path} is not a dict")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise JackpotError(f"CIFAR batch {path} lacks the 'data' or '{label_key}' entry")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise JackpotError(f"CIFAR batch {path}: data {data.shape} / labels {labels.shape} "
                           "are not (N, 3072) / (N,)")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(name: str, root: Path) -> RawSplits:
    """CIFAR-10 / CIFAR-100 (fine labels) from torchvision's extracted folders, (N, 3, 32, 32) uint8 pixels."""
    folder, train_files, test_files, label_key, classes = CIFAR_LAYOUT[name]
    base = root / folder
    parts = []
    for files in (train_files, test_files):
        xs, ys = [], []
        for fname in files:
            if not (base / fname).is_file():
                raise missing(name, base / fname, root)
            x, y = _read_cifar_batch(base / fname, label_key)
            xs.append(x)
            ys.append(y)
        parts += [np.concatenate(xs),
                  _labels(np.concatenate(ys), classes, name, base)]
    return RawSplits(*parts, classes)


def _labels(y: np.ndarray, classes: int, name: str, where: Path) -> np.ndarray:
    y = np.asarray(y).astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise JackpotError(f"{name} labels in {where} fall outside 0..{classes - 1}")
    return y
