"""`folder:PATH`: image folders in the ImageNet / torchvision ImageFolder layout, streamed.

    PATH/train/<class>/*.jpeg      PATH/val/<class>/*.jpeg      (classes: the sorted train folders)

Nothing decoded is held in memory: the training loop decodes each batch with Pillow in DataLoader
worker processes (`--loader-workers`). Training examples get the standard ImageNet augmentation
(random-resized crop to `--image-size`, scale 0.08-1 and aspect ratio 3/4-4/3 with 10 attempts
then a centre crop, horizontal flip with probability 1/2), evaluation examples the standard
transform (resize the short side to size x 256/224, centre crop); both are then standardised with
ImageNet's channel mean and std. Every draw of an example's augmentation comes from a generator
seeded by (run seed, step, position in the global batch), so a resumed run, a DDP rank's share
and a single process all decode exactly the same pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import JackpotError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)  # ImageNet's, as torchvision's references use
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass(frozen=True)
class ImageSplit:
    """Files and labels of one split; decoded only when asked."""

    files: tuple[str, ...]
    labels: torch.Tensor
    size: int

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx: torch.Tensor) -> "ImageSplit":
        return ImageSplit(tuple(self.files[i] for i in idx.tolist()), self.labels[idx], self.size)

    def eval_batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([eval_image(self.files[i], self.size) for i in idx]), self.labels[list(idx)]


@dataclass(frozen=True)
class FolderDataset:
    """A streamed dataset: the same questions as jackpot.data.Dataset answered from files."""

    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    classes: tuple[str, ...]
    val: ImageSplit | None = None
    augment: str | None = None  # the augmentation is part of decoding (train_image)
    streamed: bool = field(default=True, init=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.train.size, self.train.size)

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_test(self) -> int:
        return len(self.test)

    @property
    def y_train(self) -> torch.Tensor:
        return self.train.labels

    def evaluation_splits(self) -> dict:
        return {"test": self.test, **({"val": self.val} if self.val is not None else {})}

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x  # decoded examples are network inputs already

    def examples(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training examples `idx` without augmentation (mask scoring, layer timing)."""
        return self.train.eval_batch(idx.tolist())

    def train_batch(self, idx: list[int], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training examples `idx`, each augmented by the generator of its seed."""
        xs = [train_image(self.train.files[i], self.train.size, torch.Generator().manual_seed(s))
              for i, s in zip(idx, seeds)]
        return torch.stack(xs) if xs else torch.empty(0, *self.input_shape), self.train.labels[idx]


# up to this many images every header is read at load time (0.03 ms each from a warm local disk,
# measured; slower on network file systems); a larger folder's
# unreadable file stops its run when first met, the run resumable once the file is fixed
HEADER_CHECK_MAX = 50_000


def _scan(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    files, labels = [], []
    for label, cls in enumerate(classes):
        for p in sorted((split_dir / cls).iterdir()) if (split_dir / cls).is_dir() else []:
            if p.suffix.lower() in EXTENSIONS:
                files.append(str(p))
                labels.append(label)
    return files, labels


def load_folder(path: str | Path, image_size: int, val_size: int = 0, seed: int = 0) -> FolderDataset:
    root = Path(path).expanduser()
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise JackpotError(f"folder dataset {root} needs train/<class>/ and val/<class>/ image folders")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise JackpotError(f"folder dataset {root}: train/ holds {len(classes)} class folder(s), need at least 2")
    unknown = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise JackpotError(f"folder dataset {root}: val/ has classes train/ lacks: {', '.join(unknown[:5])}")
    if image_size < 8:
        raise JackpotError(f"`data.image_size` must be at least 8 pixels, got {image_size}")
    (tf, tl), (vf, vl) = _scan(train_dir, classes), _scan(val_dir, classes)
    if not tf or not vf:
        raise JackpotError(f"folder dataset {root}: no images ({', '.join(EXTENSIONS)}) in "
                           f"{'train' if not tf else 'val'}/")
    shown = set(tl)
    empty = [c for i, c in enumerate(classes) if i not in shown]
    if empty:  # a class no training example shows would still widen the classifier
        raise JackpotError(f"folder dataset {root}: train/{empty[0]}/ holds no images "
                           f"({', '.join(EXTENSIONS)}){f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}")
    if len(tf) + len(vf) <= HEADER_CHECK_MAX:  # a file no decoder reads is refused before any run starts
        for f in tf + vf:
            _header(f)
    train = ImageSplit(tuple(tf), torch.tensor(tl, dtype=torch.int64), image_size)
    test = ImageSplit(tuple(vf), torch.tensor(vl, dtype=torch.int64), image_size)
    val = None
    if val_size:
        if not 0 < val_size < len(train):
            raise JackpotError(f"val_size={val_size} must be smaller than the {len(train)} training examples")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(int(seed)))
        val, train = train.subset(perm[:val_size].sort().values), train.subset(perm[val_size:].sort().values)
    return FolderDataset(f"folder:{root}", train, test, len(classes), tuple(classes), val)


def _header(path: str) -> None:
    """Read the image's header only (PIL opens lazily): garbage and unknown formats fail here."""
    try:
        with Image.open(path):
            pass
    except (OSError, ValueError) as e:
        raise JackpotError(f"cannot decode image {path}: {e}") from None


def _open(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise JackpotError(f"cannot decode image {path}: {e}") from None


def _tensor(im: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (x - MEAN) / STD


def crop_box(width: int, height: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom): area 8-100%, aspect 3/4-4/3, 10 tries."""
    area = width * height
    for _ in range(10):
        target = area * (0.08 + 0.92 * float(torch.rand((), generator=g)))
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand((), generator=g))
        ratio = math.exp(log_ratio)
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            return left, top, left + w, top + h
    side = min(width, height)  # fallback: the central square
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def train_image(path: str, size: int, g: torch.Generator) -> torch.Tensor:
    im = _open(path)
    im = im.resize((size, size), Image.BILINEAR, box=crop_box(*im.size, g))
    if float(torch.rand((), generator=g)) < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return _tensor(im)


def eval_image(path: str, size: int) -> torch.Tensor:
    im = _open(path)
    short = round(size * 256 / 224)
    w, h = im.size
    scale = short / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return _tensor(im.crop((left, top, left + size, top + size)))
