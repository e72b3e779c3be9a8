"""Per-batch training augmentation, vectorised in torch so it runs on the batch's device."""
from __future__ import annotations

import torch

from jackpot.errors import JackpotError

AUGMENTATIONS = ("crop-flip",)
CROP_PAD = 4


def augment_batch(x: torch.Tensor, kind: str | None, generator: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of the batch `x`; randomness comes only from `generator`.

    "crop-flip": zero-pad 4 pixels per side, take a random crop of the original size (32x32 for
    CIFAR) and flip horizontally with probability 0.5, independently per example.
    """
    if kind is None:
        return x
    if kind != "crop-flip":
        raise JackpotError(f"unknown augmentation '{kind}'; valid: {', '.join(AUGMENTATIONS)}")
    if x.dim() != 4:
        raise JackpotError(f"crop-flip needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    return _crop_flip(x, generator, CROP_PAD)


def _crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    n, c, h, w = x.shape
    gdev = generator.device
    # Draw on the generator's device (the CPU: the same crops on every device) ...
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev)
    flip = torch.rand(n, generator=generator, device=gdev) < 0.5
    if x.device != gdev:  # ... then one copy that does not make the host wait for the device
        top, left, flip = _to_device_async(torch.stack((top, left, flip.long())), x.device)
        flip = flip.bool()

    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = top[:, None] + torch.arange(h, device=x.device)           # (N, H)
    cols = left[:, None] + torch.arange(w, device=x.device)          # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)            # flip = read columns backwards
    # One gather via broadcast advanced indexing: (N,1,1,1), (1,C,1,1), (N,1,H,1), (N,1,1,W).
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t on `device` without a host sync: a non-blocking copy, from pinned memory to a GPU (from
    pageable memory a host-to-GPU copy waits for the device)."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
