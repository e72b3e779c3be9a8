"""Gradual magnitude pruning (Zhu & Gupta 2017) as a training-loop callback.

Density follows the cubic schedule  d_t = d_f + (d_i - d_f) * (1 - (t - t0) / (t1 - t0))^3  and is
applied every `every` steps from t0 to t1 (inclusive; the last update lands on the final density
exactly): the lowest-|w| active weights of each layer (or globally) are pruned to keep exactly
keep_count(d_t, N) weights. Pruned weights stay pruned (monotone).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import JackpotError, check_fraction
from .pruning import prune_to_density, scores_magnitude
from .schedules import Schedule


@dataclass
class GradualMagnitude:
    final_density: float
    start: int
    end: int
    every: int = 100
    initial_density: float = 1.0
    scope: str = "layerwise"

    def __post_init__(self):
        check_fraction(self.final_density, "final density")
        if self.every <= 0:
            raise JackpotError(f"pruning frequency must be positive, got {self.every}")
        if not 0 <= self.start <= self.end:
            raise JackpotError(f"gmp start ({self.start}) must be before its end ({self.end})")

    def density_at(self, step: int) -> float:
        if step <= self.start:
            return self.initial_density
        if step >= self.end:
            return self.final_density
        return Schedule("polynomial", self.initial_density, self.final_density).value(
            step - self.start, self.end - self.start)

    def is_update(self, step: int) -> bool:
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)

    def on_step_start(self, step, model, sparsifier) -> None:
        if not self.is_update(step):
            return
        masks = sparsifier.masks
        sparsifier.set_masks(prune_to_density(scores_magnitude(model, masks), masks,
                                              self.density_at(step), self.scope))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
