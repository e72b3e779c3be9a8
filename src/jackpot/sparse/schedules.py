"""One family of schedules for every sparsity that changes over time (as jaxpruner's
sparsity_schedules serves both pruning and DST): DST's drop fraction, GMP's density, iterative
SynFlow's per-round density and IMP's per-level density are each `Schedule.value(step, total)`.

    constant     initial throughout
    cosine       initial / 2 * (1 + cos(pi * step / total))          (RigL's drop fraction)
    linear       initial - (initial - final) * step / total          (SynFlow linear rounds, IMP linear levels)
    exponential  initial * (final / initial) ** (step / total)       (SynFlow rounds, IMP geometric levels)
    polynomial   final + (initial - final) * (1 - step / total) ** power   (GMP's cubic; DST inverse-power)

`step / total` is clipped to [0, 1] except for `exponential` and `linear` with `clip=False`
(IMP levels, which have no last level). The arithmetic is written in the order each method's paper
code computes it, so every method's values are bit-identical to its own formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import JackpotError

KINDS = ("constant", "cosine", "linear", "exponential", "polynomial")


@dataclass(frozen=True)
class Schedule:
    kind: str
    initial: float
    final: float = 0.0
    power: int = 3

    def __post_init__(self):
        if self.kind not in KINDS:
            raise JackpotError(f"unknown schedule {self.kind!r}; choose {', '.join(KINDS)}")

    def value(self, step: float, total: float = 1, clip: bool = True) -> float:
        if self.kind == "constant":
            return self.initial
        if self.kind == "linear":
            v = self.initial - (self.initial - self.final) * step / total
            return max(min(v, max(self.initial, self.final)), min(self.initial, self.final)) if clip else v
        progress = step / total
        if clip:
            progress = min(1.0, max(0.0, progress))
        if self.kind == "cosine":
            return self.initial / 2 * (1 + math.cos(math.pi * progress))
        if self.kind == "exponential":
            return self.initial * (self.final / self.initial) ** progress
        return self.final + (self.initial - self.final) * (1 - progress) ** self.power
