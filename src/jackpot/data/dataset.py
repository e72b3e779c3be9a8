"""The one in-memory dataset type every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Dataset:
    """Train/test tensors already normalised, labels as int64.

    `x_*` have shape (N, *input_shape) and dtype float32. `augment` names the training-time
    augmentation the training loop applies per batch (None or "crop-flip").
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
