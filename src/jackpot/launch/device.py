"""Which device a command computes on: --device, or this rank's GPU under torchrun/srun."""
from __future__ import annotations

import atexit

import torch

from ..errors import JackpotError
from . import ddp


def resolve_device(name: str) -> str:
    """'auto' -> cuda when available; under torchrun one process per device (joins the group)."""
    if ddp.dist_env().world_size > 1:
        _, device = ddp.init("gloo" if name == "cpu" else None)
        atexit.register(ddp.shutdown)  # leave the process group when the command ends
        return "cpu" if name == "cpu" else str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JackpotError(f"--device {name}: CUDA is not available on this machine")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # mps, xpu, meta...: not run here
        raise JackpotError(f"unknown --device {name!r}; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise JackpotError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name
