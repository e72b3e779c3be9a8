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
  training loss it logs is the whole batch's, from every rank's sum (`batch_mean`).

What a DDP run computes (jackpot.train.loop):
- rank r takes examples r, r + W, r + 2W, ... of every global batch (W = world size), after the
  augmentation was drawn for the whole global batch, so the examples and crops equal a
  single-process run's. Each rank's loss is the *sum* of its examples' losses times W / (global batch
  size): DDP's gradient average is then the global batch's mean gradient for any batch size, also
  when the last batch has fewer examples than ranks (a rank with none joins the all-reduce with a
  zero gradient). Models without BatchNorm train the same network as one process (up to float
  summation order);
- divergence is decided from all-reduced values, so every rank stops at the same step;
- there is no SyncBatchNorm: BatchNorm normalises with each rank's local batch statistics (as with
  plain DDP), so a BN model's result depends on the world size; the running statistics in the
  recorded evaluation and final.pt are rank 0's (DDP broadcasts rank 0's buffers before every
  forward, then each rank updates them with its own batch). SyncBatchNorm is not offered: it costs
  an all-reduce per BN layer per step, and per-rank statistics are the usual DDP setting
  (torchvision's reference recipes make SyncBatchNorm opt-in). A BN model is refused when some rank
  would get fewer than 2 examples of a batch;
- every rank evaluates the whole test (and validation) set: evaluation is cheap next to training
  and needs no collective (a sharded one would need an all-reduce per split); rank 0's is the one
  recorded, and the divergence decision is taken from the all-reduced training loss, not from it.
CPU runs use the gloo backend (what the tests exercise), CUDA runs nccl.
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import JackpotError
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


_NODE_COUNT_VARS = ("SLURM_NNODES", "SLURM_JOB_NUM_NODES", "GROUP_WORLD_SIZE", "NNODES")


def _multi_node() -> bool:
    """The environment says the job spans more than one node (SLURM's or torchrun-style counts)."""
    for name in _NODE_COUNT_VARS:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def init(backend: str | None = None) -> tuple[DistEnv, torch.device]:
    """Join the process group (no-op for a single process); returns (env, this rank's device).
    Call `shutdown()` at the end."""
    env = dist_env()
    cuda = torch.cuda.is_available()
    # srun often shows each task only its own GPU: local rank 3 may be the one visible device 0
    device = torch.device(f"cuda:{env.local_rank % torch.cuda.device_count()}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if env.world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # plain srun: rank 0's node must be given
            if _multi_node():  # 127.0.0.1 would make every node wait for itself until the timeout
                raise JackpotError("a multi-node run needs MASTER_ADDR (and MASTER_PORT): set them to rank 0's "
                                   "host and a free port, e.g. MASTER_ADDR=$(scontrol show hostnames "
                                   "$SLURM_JOB_NODELIST | head -n1)")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
        chosen = backend or ("nccl" if cuda else "gloo")
        extra = {}
        supported = "device_id" in inspect.signature(dist.init_process_group).parameters
        if supported and chosen == "nccl" and device.type == "cuda":
            extra["device_id"] = device  # binds the communicator to this rank's GPU (torch >= 2.3)
        dist.init_process_group(chosen, rank=env.rank, world_size=env.world_size, **extra)
    return env, device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def batch_mean(local_sum: torch.Tensor, global_count: int) -> torch.Tensor:
    """The global batch's mean of a per-example value (the logged training loss) from this rank's
    sum over its examples (0 for a rank with none), the same on every rank. One all-reduce also
    carries a flag: NaN on every rank when any rank's sum is not finite, so they all decide
    divergence alike. `local_sum / global_count` when not distributed."""
    local_sum = local_sum.detach()
    if not is_distributed():
        return local_sum / global_count
    buf = torch.stack([local_sum.double(), (~torch.isfinite(local_sum)).double()])
    dist.all_reduce(buf)
    mean = torch.where(buf[1] > 0, torch.full_like(buf[0], float("nan")), buf[0] / global_count)
    return mean.to(local_sum.dtype)


SHUTDOWN_WAIT_S = 60  # how long a gloo rank waits at the end for the others (rank 0 writes reports)


def shutdown() -> None:
    """Leave the process group (no-op when none was joined): call once at the end of a run.
    Gloo ranks first wait for each other (bounded, so a rank that failed alone never hangs
    here): a rank tearing down its connections while another still finishes its last collective
    aborted now and then at exit ("terminate called without an active exception")."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        with contextlib.suppress(RuntimeError):  # a rank gone or late: leave anyway
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=SHUTDOWN_WAIT_S))
    dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (broadcasts rank 0's weights); the model itself when
    not distributed. Give masks, the Sparsifier and DST methods the *unwrapped* model."""
    model = model.to(device)
    if not is_distributed():
        return model
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
