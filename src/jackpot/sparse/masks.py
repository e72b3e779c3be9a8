"""Masks: parameter name -> bool tensor, with exact counts, reports and save/load."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import JackpotError
from ..files import atomic_torch_save, safe_torch_load


def keep_count(density: float, n: int) -> int:
    """How many of n weights a density keeps: the nearest integer to density * n, halves up.

    Every method uses this one rounding, so counts are exact and documented (never Bernoulli).
    """
    if not 0.0 <= density <= 1.0:
        raise JackpotError(f"density must be in [0, 1], got {density}")
    return min(n, int(math.floor(density * n + 0.5)))


def top_k(scores: torch.Tensor, k: int, allowed: torch.Tensor | None = None, ties: str = "index",
          n_allowed: int | None = None) -> torch.Tensor:
    """Bool mask (the shape of `scores`) of the k highest scores, compared as float32, among the
    `allowed` positions (every position when None; all allowed ones when there are at most k).

    ties="index": a stable full sort, so the earliest index wins among equal scores (pruning's
    documented rule); ties="topk": torch.topk's partial selection (~10x cheaper than a full sort on
    0.2M entries, which DST pays at every update), deterministic for a given input but not by index.
    When few positions are allowed (the active weights), only those are scored.
    `n_allowed`: the number of allowed positions, when the caller knows it (DST keeps every layer's
    count): counting them here reads a value back from the device, a host sync on a GPU.
    """
    flat = scores.flatten()
    allowed_flat = None if allowed is None else allowed.flatten()
    if n_allowed is None:
        n_allowed = flat.numel() if allowed_flat is None else int(allowed_flat.sum())
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=(scores if allowed is None else allowed).device)
    if k <= 0:
        return keep.view(scores.shape)
    if k >= n_allowed:
        return ~keep.view(scores.shape) if allowed is None else allowed.clone()
    if allowed_flat is not None and 8 * n_allowed < flat.numel():
        # nonzero() in index order, sized by the known count: no host sync
        candidates = torch.nonzero_static(allowed_flat, size=n_allowed).squeeze(1)
        keep[candidates[_best(flat[candidates].float(), k, ties)]] = True
    else:
        values = flat.float() if allowed_flat is None else torch.where(allowed_flat, flat.float(), float("-inf"))
        keep[_best(values, k, ties)] = True
    return keep.view(scores.shape)


def _best(values: torch.Tensor, k: int, ties: str) -> torch.Tensor:
    if ties == "index":
        return torch.argsort(values, descending=True, stable=True)[:k]
    if ties == "topk":
        return torch.topk(values, k, sorted=False).indices
    raise ValueError(f"unknown tie rule {ties!r}")


def random_positions(size: int, count: int, generator: torch.Generator,
                     allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Flat bool tensor of `size` entries with `count` of them True, drawn uniformly (among the flat
    indices `allowed`, when given) by one randperm of the pool: the one way every random mask is drawn,
    so a seed gives the same positions whichever builder asks."""
    flat = torch.zeros(size, dtype=torch.bool)
    pool = size if allowed is None else allowed.numel()
    picked = torch.randperm(pool, generator=generator)[:count]
    flat[picked if allowed is None else allowed[picked]] = True
    return flat


class Masks(dict):
    """A dict of bool tensors keyed by parameter name (True = weight kept)."""

    @classmethod
    def ones_for(cls, model: torch.nn.Module, names: list[str]) -> "Masks":
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})

    # count_nonzero, not sum: a bool sum widens to int64 first, 16x slower (75 ms on 16.7M weights)
    def count(self) -> int:
        return sum(int(torch.count_nonzero(m)) for m in self.values())

    def size(self) -> int:
        return sum(m.numel() for m in self.values())

    def density(self) -> float:
        return self.count() / max(1, self.size())

    def layer_counts(self) -> dict[str, int]:
        return {n: int(torch.count_nonzero(m)) for n, m in self.items()}

    def report(self) -> list[dict]:
        """One row per masked parameter: name, shape, params, nnz, density."""
        counts = {n: int(torch.count_nonzero(m)) for n, m in self.items()}
        return [{"name": n, "shape": list(m.shape), "params": m.numel(), "nnz": counts[n],
                 "density": counts[n] / m.numel()} for n, m in self.items()]

    def clone(self) -> "Masks":
        return Masks({n: m.clone() for n, m in self.items()})

    def is_subset_of(self, other: "Masks") -> bool:
        """True when every weight kept here is also kept in `other` (monotone pruning)."""
        return self.keys() == other.keys() and all(
            not bool((m & ~other[n]).any()) for n, m in self.items())

    def random_like(self, generator: torch.Generator, within: "Masks | None" = None) -> "Masks":
        """Same count per layer, positions drawn uniformly at random (among the positions `within`
        keeps, when given: a full `within` gives the same draw as none)."""
        out = Masks()
        for n, m in self.items():
            allowed = None if within is None else within[n].flatten().cpu().nonzero().squeeze(1)
            out[n] = random_positions(m.numel(), int(m.sum()), generator, allowed).view(m.shape).to(m.device)
        return out

    def random_in_groups(self, generator: torch.Generator, groups: list[list[str]]) -> "Masks":
        """Each group's total count kept, positions drawn uniformly over the group's tensors taken
        together (the MNIST-1D notebook draws one random mask over a layer's weight and bias)."""
        out = Masks()
        for names in groups:
            sizes = [self[n].numel() for n in names]
            flat = random_positions(sum(sizes), sum(int(self[n].sum()) for n in names), generator)
            for n, part in zip(names, flat.split(sizes)):
                out[n] = part.view(self[n].shape).to(self[n].device)
        return Masks({n: out[n] for n in self})

    @torch.no_grad()
    def apply_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """Zero the pruned entries of `model`'s masked parameters in place; returns `model`."""
        params = dict(model.named_parameters())
        for n, m in self.items():
            params[n].mul_(m.to(params[n].device))
        return model

    def to(self, device) -> "Masks":
        return Masks({n: m.to(device) for n, m in self.items()})

    def save(self, path: str | Path) -> None:
        atomic_torch_save({n: m.cpu() for n, m in self.items()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Masks":
        data = safe_torch_load(path, what="mask file")
        if not isinstance(data, dict) or not all(
                isinstance(v, torch.Tensor) and v.dtype == torch.bool for v in data.values()):
            raise JackpotError(f"{path} is not a jackpot mask file (expected name -> bool tensor)")
        return cls(data)

    def check_against(self, model: torch.nn.Module) -> None:
        """Refuse masks whose names or shapes do not match the model's parameters."""
        params = dict(model.named_parameters())
        for n, m in self.items():
            if n not in params:
                raise JackpotError(f"mask names parameter {n!r}, which the model does not have")
            if tuple(m.shape) != tuple(params[n].shape):
                raise JackpotError(f"mask for {n} has shape {tuple(m.shape)}, "
                                   f"the parameter has {tuple(params[n].shape)}")
