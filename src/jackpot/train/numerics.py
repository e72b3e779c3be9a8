"""How a stage's arithmetic runs on its device: precision (autocast, grad scaler, TF32),
determinism, memory format and compilation. What each guarantees:

    precision   fp32  float32 everywhere, TF32 off (matmuls and convolutions on GPUs too)
                tf32  float32 storage, TF32 matmuls/convolutions on GPUs that have them (Ampere+)
                bf16  bfloat16 autocast of forward and loss; weights, gradients, optimizer state,
                      masks and DST scores stay float32
                fp16  float16 autocast with a dynamic grad scaler; gradients are unscaled before
                      any callback reads them (RigL's growth criterion sees true gradients), and a
                      step whose gradients overflowed is skipped by the scaler
    deterministic on CUDA: torch.use_deterministic_algorithms (a warning names any op without a
                deterministic kernel), cuDNN deterministic without benchmarking,
                CUBLAS_WORKSPACE_CONFIG=:4096:8. On CPU the kernels jackpot uses are deterministic
                for a fixed thread count already (jackpot records and checks it), so nothing changes.
    denormals   keep: IEEE subnormal floats (PyTorch's default); flush: subnormal inputs and results
                are zero on the CPU (torch.set_flush_denormal; TensorFlow's CPU default). Where a
                training loss nears 0 (a 4096-wide MLP at 99% sparsity, Adam lr 1e-2: loss 1e-10 by
                step 300) the sparse kernels' backward meets subnormals and its steps slowed from 15
                to 39 ms; flushed they stayed at 14 ms (MKL's dense GEMM did not slow either way).
    channels_last  4-d activations and conv weights in NHWC order (faster convolutions on GPUs)
    compile     torch.compile of the forward (a backend name: inductor, aot_eager, ...)
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..errors import JackpotError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def configure_device(device: torch.device, precision: str, deterministic: bool, denormals: str = "keep") -> None:
    """Global switches of this process for `device` (set at the start of every stage)."""
    if denormals not in ("keep", "flush"):
        raise JackpotError(f"unknown denormals setting {denormals!r}; choose keep or flush")
    torch.set_flush_denormal(denormals == "flush")  # the CPU's switch, whatever device trains
    if device.type != "cuda":
        return
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def autocast(device: torch.device, precision: str):
    """The context the forward and loss run in."""
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str):
    """A dynamic loss scaler for fp16, None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """channels_last for models with 4-d conv weights (others are left as they are)."""
    if channels_last and any(p.dim() == 4 for p in model.parameters()):
        model.to(memory_format=torch.channels_last)
    return model


def inputs_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def check_compile(backend: str) -> None:
    """Refuse an unknown torch.compile backend before anything runs."""
    if backend == "none":
        return
    known = torch.compiler.list_backends(exclude_tags=())  # loads dynamo: only when compiling
    if backend not in known:
        raise JackpotError(f"unknown `train.compile` backend {backend!r}; choose none or {', '.join(sorted(known))}")


def compiled(net: torch.nn.Module, backend: str) -> torch.nn.Module:
    """The forward torch.compile'd with `backend` ("none": as it is)."""
    return net if backend == "none" else torch.compile(net, backend=backend)
