"""Live logging while a stage trains: `--log tensorboard`, `--log wandb` (offline), or both.

Each evaluation record (losses, accuracies, learning rate) goes to every sink as it is written to
metrics.jsonl, with what only a live view needs: the median step time so far, each masked layer's
density and the latest DST mask update (dropped/grown counts). A stage's hyperparameters (its
run's canonical settings) are logged once: TensorBoard `add_hparams` with the final metrics at the
end, W&B's run config at the start. Event files live with the stage (`<stage>/tensorboard/`,
`<stage>/wandb/`); a resumed stage drops what it logged after its checkpoint (TensorBoard
purge_step, W&B resume of the same run id), so the logs end like an uninterrupted run's. The
packages are optional extras, imported only when asked; a missing one is one clear line before
anything is written. Only rank 0 logs under DDP (the training loop opens sinks on rank 0 only).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

from ..config import split_list
from ..errors import JackpotError

SINKS = ("tensorboard", "wandb")
_EXTRA = {"tensorboard": "tb", "wandb": "wandb"}


def sink_names(text: str) -> list[str]:
    names = list(dict.fromkeys(split_list(text)))  # a sink named twice logs once
    unknown = sorted(set(names) - set(SINKS))
    if unknown:
        raise JackpotError(f"unknown `train.log` sink(s) {', '.join(unknown)}; choose {', '.join(SINKS)}")
    return names


def require(text: str) -> None:
    """Refuse, in one line, a sink whose package is not installed (called before a run is created)."""
    for name in sink_names(text):
        _module(name)


def _module(name: str):
    try:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            return SummaryWriter
        import wandb
        return wandb
    except ImportError:
        raise JackpotError(f"--log {name} needs the {name} package: pip install 'jackpot[{_EXTRA[name]}]'") from None


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


class _TensorBoard:
    def __init__(self, stage_dir: Path, start: int, hparams: dict):
        writer = _module("tensorboard")
        # purge_step: events a killed attempt logged after the checkpoint at `start` are dropped on
        # resume (the point of step `start` itself was logged before the checkpoint and stays)
        self.writer = writer(log_dir=str(stage_dir / "tensorboard"), purge_step=start + 1 if start > 0 else None)
        self.hparams = hparams

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, final: dict[str, float] | None) -> None:
        if final is not None:
            self.writer.add_hparams(self.hparams, {f"hparam/{k}": v for k, v in final.items()}, run_name="hparams")
        self.writer.close()


class _Wandb:
    def __init__(self, stage_dir: Path, start: int, hparams: dict, name: str):
        wandb = _module("wandb")
        run_id = hashlib.sha256(str(stage_dir.resolve()).encode()).hexdigest()[:16]  # one id per stage
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(mode="offline", dir=str(stage_dir), project="jackpot", name=name, id=run_id,
                              config=hparams, resume="allow")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, final: dict[str, float] | None) -> None:
        if final is not None:
            self.run.summary.update(final)
        self.run.finish()


class LiveLog:
    """The sinks of one stage (empty when `text` names none)."""

    def __init__(self, text: str, stage_dir: Path, start: int, hparams: dict, name: str):
        self.sinks = []
        for sink in sink_names(text):
            self.sinks.append(_TensorBoard(Path(stage_dir), start, hparams) if sink == "tensorboard"
                              else _Wandb(Path(stage_dir), start, hparams, name))

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def write(self, record: dict, extra: dict | None = None) -> None:
        values = {**_scalars(record), **_scalars(extra or {})}
        for sink in self.sinks:
            sink.log(int(record["step"]), values)

    def close(self, final: dict | None) -> None:
        for sink in self.sinks:
            sink.close(_scalars(final) if final else None)
