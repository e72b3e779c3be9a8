"""One run on many processes (GPUs) with torch DDP under `torchrun`.

    torchrun --standalone --nproc_per_node=4 train_script.py      # one node
    srun ... torchrun --nnodes=$N --rdzv-endpoint=HOST:PORT ...   # SLURM (or plain srun, see dist_env)

Rules for sparse training (enforced here, whatever engine drives the loop):
- masks are decided on rank 0 and broadcast (`sync_masks`) after every mask change: IMP pruning,
  RigL/SET drop-and-grow, GMP steps. `MaskSync` wraps a training-loop callback (a DST method, GMP)
  and does this at the same step on every rank;
- pruned weights stay zeroed entries of dense parameters, so DDP's all-reduce averages the *dense*
  gradient that RigL's growth criterion reads (between backward() and the optimizer step);
- start weights come from rank 0 (DDP broadcasts them when it wraps the model);
- only rank 0 writes checkpoints, masks and metrics (`store.is_primary`, `save_on_primary`); the
  training loss it logs is the whole batch's, each rank's mean weighted by its share (`global_mean`).
CPU runs use the gloo backend (what the tests exercise), CUDA runs nccl.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..sparse import Masks
from ..store import atomic_torch_save, is_primary


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int


def dist_env() -> DistEnv:
    """Rank, world size and local rank from torchrun's variables, or SLURM's under plain srun."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistEnv(0, 1, 0)


def init(backend: str | None = None) -> tuple[DistEnv, torch.device]:
    """Join the process group (no-op for a single process); returns (env, this rank's device)."""
    env = dist_env()
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{env.local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if env.world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # plain srun: rank 0's node must be given
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"), rank=env.rank,
                                world_size=env.world_size)
    return env, device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def global_mean(value: torch.Tensor, count: int) -> torch.Tensor:
    """The mean over every rank's examples of `value`, this rank's mean over its `count` examples
    (the logged training loss): shares of a batch can differ by one, so each rank's mean is
    weighted by its count. `value` itself when not distributed."""
    if not is_distributed():
        return value
    local = value.double() * count if count else torch.zeros((), dtype=torch.float64, device=value.device)
    buf = torch.stack([local, torch.tensor(float(count), dtype=torch.float64, device=value.device)])
    dist.all_reduce(buf)
    return (buf[0] / buf[1]).to(value.dtype)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (broadcasts rank 0's weights); the model itself when
    not distributed. Give masks, the Sparsifier and DST methods the *unwrapped* model."""
    model = model.to(device)
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


@torch.no_grad()
def sync_masks(masks: Masks, src: int = 0) -> Masks:
    """Every rank gets rank `src`'s masks (same names on every rank). Returns the synced Masks."""
    if not is_distributed():
        return masks
    out = Masks()
    for name, m in masks.items():
        buf = m.to(torch.uint8).contiguous()
        if dist.get_backend() == "nccl":
            buf = buf.cuda()
        dist.broadcast(buf, src)
        out[name] = buf.to(device=m.device, dtype=torch.bool)
    return out


class MaskSync:
    """Wraps a training-loop callback (DST method, GMP) so masks stay identical on every rank:
    after any call that changed the masks, rank 0's masks are broadcast and installed everywhere.
    Passes the unwrapped model to the callback. State dict and summary pass through."""

    def __init__(self, inner, src: int = 0):
        self.inner, self.src = inner, src

    def _synced(self, fn, step, model, sparsifier):
        before = sparsifier.masks if sparsifier is not None else None
        result = fn(step, unwrap(model), sparsifier)
        if sparsifier is not None and sparsifier.masks is not before:
            sparsifier.set_masks(sync_masks(sparsifier.masks, self.src))
        return result

    def on_step_start(self, step, model, sparsifier):
        if hasattr(self.inner, "on_step_start"):
            return self._synced(self.inner.on_step_start, step, model, sparsifier)

    def after_backward(self, step, model, sparsifier):
        if hasattr(self.inner, "after_backward"):
            return self._synced(self.inner.after_backward, step, model, sparsifier)
        return False

    def update(self, step, model, sparsifier):
        return self._synced(self.inner.update, step, model, sparsifier)

    def state_dict(self):
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else {}

    def load_state_dict(self, state):
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state)

    def __getattr__(self, name):  # summary(), history, schedule...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def save_on_primary(obj, path) -> None:
    """Write `obj` (atomically) from rank 0 only, then wait for it on every rank."""
    if is_primary():
        atomic_torch_save(obj, path)
    barrier()
