"""The one in-memory dataset type every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


def pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 values in [0, 1] (the arithmetic of readers that once stored floats)."""
    return x.float() / 255.0


@dataclass(frozen=True)
class Dataset:
    """Train/test tensors as stored, labels as int64; `inputs(x)` gives what the network sees.

    `x_*` have shape (N, *input_shape) and are either float32, already normalised (MNIST-1D, float
    npz files, corrupted training data), or uint8 pixels (MNIST, Fashion-MNIST, CIFAR, uint8 npz):
    a quarter of the memory, on the device for GPU runs, scaled to [0, 1] and standardised with
    `mean`/`std` (training-split statistics) batch by batch. `augment` names the training-time
    augmentation the training loop applies per batch (None or "crop-flip"), after `inputs`.
    `x_val`/`y_val` exist only when a validation split was carved from the training data.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: str | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    mean: torch.Tensor | None = None  # per-channel statistics applied to uint8 batches
    std: torch.Tensor | None = None

    streamed = False  # held in memory (jackpot.data.folder streams from files)

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def examples(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training examples `idx` as network inputs, without augmentation."""
        return self.inputs(self.x_train[idx]), self.y_train[idx]

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Stored examples (a batch or a split) as the network's float32 inputs, on x's device."""
        if x.dtype != torch.uint8:
            return x
        v = pixels(x)
        if self.mean is None:
            return v
        return (v - self.mean.to(v.device)) / self.std.to(v.device)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    def evaluation_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The splits the training loop evaluates: always test, plus val when carved."""
        splits = {"test": (self.x_test, self.y_test)}
        if self.x_val is not None:
            splits["val"] = (self.x_val, self.y_val)
        return splits

    def with_train(self, x: torch.Tensor, y: torch.Tensor) -> "Dataset":
        return replace(self, x_train=x, y_train=y)
