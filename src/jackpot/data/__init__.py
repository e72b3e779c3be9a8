"""Datasets: one registry of names -> loaders, all returning a normalised in-memory `Dataset`."""
from __future__ import annotations

from pathlib import Path

from jackpot.data.augment import AUGMENTATIONS, augment_batch
from jackpot.data import readers
from jackpot.data.builtin import load_digits, load_mnist1d
from jackpot.data.dataset import Dataset
from jackpot.data.fetch import default_root, fetch_dataset  # noqa: F401  (part of the package's API)
from jackpot.data.folder import FolderDataset, load_folder
from jackpot.data.npzfile import read_npz
from jackpot.data.prepare import build_dataset
from jackpot.errors import JackpotError

__all__ = ["AUGMENTATIONS", "Dataset", "FolderDataset", "augment_batch", "default_root", "fetch_dataset",
           "list_datasets", "load_configured", "load_dataset"]

DEFAULT_DATASET = "mnist1d"

# name -> (description, needs files under root, augmentation)
_REGISTRY: dict[str, tuple[str, bool, str | None]] = {
    "mnist1d": ("MNIST-1D, 4000/1000 split of 40-point 1-D digit signals (shipped, default)", False, None),
    "digits": ("scikit-learn 8x8 digits, 1437/360 split (needs scikit-learn)", False, None),
    "mnist": ("MNIST 28x28 handwritten digits, 60000/10000 (needs `jackpot data fetch`)", True, None),
    "fashion-mnist": ("Fashion-MNIST 28x28 clothing images, 60000/10000 (needs fetch)", True, None),
    "cifar10": ("CIFAR-10 32x32 colour images, 10 classes, 50000/10000 (needs fetch)", True, "crop-flip"),
    "cifar100": ("CIFAR-100 32x32 colour images, 100 fine classes, 50000/10000 (needs fetch)", True,
                 "crop-flip"),
}
_NPZ_DESCRIPTION = "your own .npz file with x_train, y_train, x_test, y_test"
_FOLDER_DESCRIPTION = "image folders PATH/train/CLASS/*.jpeg, PATH/val/CLASS/*.jpeg (ImageNet layout), streamed"


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) for every dataset name `load_dataset` accepts."""
    return [(n, d) for n, (d, _, _) in _REGISTRY.items()] + [("npz:PATH", _NPZ_DESCRIPTION),
                                                               ("folder:PATH", _FOLDER_DESCRIPTION)]


def load_configured(d, split_seed: int):
    """The dataset a run's data settings (a jackpot.config.DataConfig) name; `split_seed` seeds
    the validation carve-out."""
    return load_dataset(d.dataset, root=d.data_root, val_size=d.val_size, seed=split_seed,
                        standardize=d.standardize, image_size=d.image_size)


def load_dataset(name: str = DEFAULT_DATASET, root: str | None = None, val_size: int = 0,
                 seed: int = 0, standardize: bool = True, image_size: int = 224) -> Dataset | FolderDataset:
    """Load `name` (see `list_datasets`), normalised with training-split statistics.

    `val_size` > 0 carves that many examples out of the training set (permutation seeded by
    `seed`) into x_val/y_val before the statistics are computed.
    """
    if not isinstance(name, str) or not name.strip():
        raise JackpotError(f"dataset name must be a non-empty string, got {name!r}")
    if isinstance(val_size, bool) or not isinstance(val_size, int):
        raise JackpotError(f"val_size must be an integer, got {val_size!r}")
    name = name.strip()
    if name.lower().startswith("folder:"):
        return load_folder(name[7:], image_size, val_size, seed)
    if name.lower().startswith("npz:"):
        path = Path(name[4:]).expanduser()
        return build_dataset(f"npz:{path}", read_npz(path), None, val_size, seed, standardize)

    key = name.lower()
    if key not in _REGISTRY:
        valid = ", ".join(list(_REGISTRY) + ["npz:PATH", "folder:PATH"])
        raise JackpotError(f"unknown dataset '{name}'; valid names: {valid}")
    _, needs_root, augment = _REGISTRY[key]
    root_path = Path(root).expanduser() if root is not None else default_root()
    if needs_root and not root_path.is_dir():
        raise JackpotError(f"data directory {root_path} does not exist; download {key} with "
                           f"`jackpot data fetch {key} --root {root_path}`")
    return build_dataset(key, _read(key, root_path), augment, val_size, seed, standardize)


def _read(key: str, root: Path):
    if key == "mnist1d":
        return load_mnist1d()
    if key == "digits":
        return load_digits()
    if key in readers.MNIST_FOLDERS:
        return readers.read_mnist_like(key, root)
    return readers.read_cifar(key, root)
