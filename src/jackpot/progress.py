"""Progress on a terminal: a bar with ETA and the latest metric for a training stage (tqdm), plain
lines when the output is not a terminal (logs, pipes, sweep workers), nothing with --quiet."""
from __future__ import annotations

import sys

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def bars() -> bool:
    """Whether progress is drawn as bars: a terminal, and not --quiet."""
    return not _quiet and sys.stdout.isatty()


class StageBar:
    """Steps start..end of one stage; `show(metrics)` puts the latest evaluation beside the bar."""

    def __init__(self, label: str, start: int, end: int, step: int):
        self.bar = tqdm(total=end - start, initial=step - start, desc=label, unit="step", leave=False,
                        file=sys.stdout, dynamic_ncols=True, mininterval=0.5)

    def step(self) -> None:
        self.bar.update(1)

    def show(self, record: dict) -> None:
        parts = {k: f"{v:.3f}" if "loss" in k else f"{100 * v:.1f}%" for k, v in record.items()
                 if k in ("train_loss", "test_acc") and isinstance(v, float)}
        self.bar.set_postfix(parts, refresh=False)

    def close(self) -> None:
        self.bar.close()
