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
          n_allowed: int | None = None, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (the shape of `scores`) of the k highest scores, compared as float32, among the
    `allowed` positions (every position when None; all allowed ones when there are at most k).

    ties="index": the earliest index wins among equal scores (pruning's and DST's documented rule:
    the same set on every device and for every algorithm that finds it); on a CPU and large inputs
    found by ranking only the entries past a sampled threshold (`_index_best`), elsewhere by a
    stable full sort. ties="topk": torch.topk's partial selection, deterministic for a given input
    but not by index.
    When few positions are allowed (the active weights), only those are scored.
    `n_allowed`: the number of allowed positions, when the caller knows it (DST keeps every layer's
    count): counting them here reads a value back from the device, a host sync on a GPU.
    `excluded`: instead of `allowed`, the flat indices of the positions not allowed (distinct), when
    the caller holds them (a sparse layer's kept weights): the same set, without a dense bool pass.
    """
    flat = scores.flatten()
    if excluded is not None:
        if allowed is not None:
            raise ValueError("top_k takes allowed or excluded, not both")
        return _top_k_excluding(flat, k, excluded, ties).view(scores.shape)
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


def _top_k_excluding(flat: torch.Tensor, k: int, excluded: torch.Tensor, ties: str) -> torch.Tensor:
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[top_k_indices(flat, k, excluded, ties)] = True
    return keep


def top_k_indices(scores: torch.Tensor, k: int, excluded: torch.Tensor, ties: str = "index",
                  scratch: bool = False) -> torch.Tensor:
    """Flat indices of the set `top_k(scores, k, excluded=excluded)` marks (in no set order):
    for a caller that holds positions as indices (a sparse layer's update), not as a mask.
    `scratch`: `scores` is the caller's own float32 tensor, free to overwrite (no copy of it)."""
    flat = scores.flatten()
    if k <= 0:
        return excluded.new_zeros(0, dtype=torch.long)
    if k >= flat.numel() - excluded.numel():
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[excluded] = False
        return keep.nonzero().squeeze(1)
    values = flat.float()
    if values.data_ptr() == flat.data_ptr() and not scratch:  # the caller's tensor, not ours to write
        values = values.clone()
    # what torch.where(allowed, scores, -inf) gives, at O(excluded) instead of a dense pass
    return _best(values.index_fill_(0, excluded.to(values.device), float("-inf")), k, ties)


def flat_nonzero(flags: torch.Tensor) -> torch.Tensor:
    """flags.flatten().nonzero().squeeze(1), faster when few are set: on a CPU torch's nonzero
    reads a bool tensor one byte at a time; here the 8-byte words holding any True are found
    first and only those are read bytewise (3x faster on 16.7M flags with 0.1% set; with more than a
    quarter of the words holding one, the plain nonzero: 16.7M flags, 5% set, break even)."""
    flat = flags.flatten()
    if (flat.device.type != "cpu" or flat.numel() % 8 or flat.storage_offset() % 8
            or flat.numel() < FAST_SELECT_MIN):
        return flat.nonzero().squeeze(1)
    as_words = flat.view(torch.int64)
    if 4 * int(torch.count_nonzero(as_words)) > as_words.numel():  # many set: the word pass loses (measured)
        return flat.nonzero().squeeze(1)
    words = as_words.nonzero().squeeze(1)
    within = flat.view(-1, 8)[words].nonzero()  # (word row, byte) in ascending order
    return words[within[:, 0]] * 8 + within[:, 1]


def _best(values: torch.Tensor, k: int, ties: str) -> torch.Tensor:
    if ties == "index":
        return _index_best(values, k)
    if ties == "topk":
        return torch.topk(values, k, sorted=False).indices
    raise ValueError(f"unknown tie rule {ties!r}")


FAST_SELECT_MIN, _SAMPLE = 1 << 16, 1 << 14


def _stable_best(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(values, descending=True, stable=True)[:k]


def _index_best(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest of the flat float `values`, the earliest index first among equal
    ones: exactly the first k of a stable descending sort. On a CPU and FAST_SELECT_MIN+ entries,
    only the entries at or past a threshold read from a sample are sorted (a full sort or
    topk of 16.7M entries takes ~0.4 s on one thread, this ~30 ms); the threshold is used only when
    at least the needed count passes it, so the set is exact whatever the sample. When k is most
    of the entries, the n - k lowest-ranked are found the same way and the rest returned."""
    n = values.numel()
    # sort ranks NaN highest: keep that rule for NaN (a NaN sum, one cheap pass, says one may be
    # there; +inf beside -inf says so too, and takes the full sort)
    if values.device.type != "cpu" or n < FAST_SELECT_MIN or bool(values.sum().isnan()):
        return _stable_best(values, k)
    if 2 * k <= n:
        return _past_threshold(values, k)
    # lowest-ranked n - k: the highest of -values with the *latest* index first among ties,
    # i.e. the highest of the reversed -values, earliest (reversed) index first
    worst = n - 1 - _past_threshold(values.neg().flip(0), n - k)
    keep = torch.ones(n, dtype=torch.bool, device=values.device)
    keep[worst] = False
    return keep.nonzero().squeeze(1)


def _past_threshold(values: torch.Tensor, k: int) -> torch.Tensor:
    n = values.numel()
    # positions drawn by a generator of its own (a strided sample would read a few columns of a
    # weight: gradients of dead inputs are whole zero columns); the set found does not depend on it
    sample = values[torch.randint(n, (_SAMPLE,), generator=torch.Generator().manual_seed(n))]
    m = sample.numel()
    # the sample's r-th highest value: about r * n / m entries pass it; aim at 1.2k plus 4 sigma
    want = k * m / n
    r = int(1.2 * want + 4 * math.sqrt(want) + 8)
    if r >= m:
        return _stable_best(values, k)
    threshold = torch.topk(sample, r, sorted=False).values.min()
    candidates = flat_nonzero(values >= threshold)
    if candidates.numel() < k:  # an unlucky sample: the threshold would lose some of the k
        return _stable_best(values, k)
    # far more than the r sample entries at or past the threshold promise: a mass of equal values
    # at the threshold (ReLU's zero gradients)
    if candidates.numel() > 3 * max(k, r * n // m) + 1024:
        above = flat_nonzero(values > threshold)
        if above.numel() <= k:  # all of them, then the earliest of those equal to the threshold
            at = (values == threshold).nonzero().squeeze(1)[:k - above.numel()]  # a mass: plain nonzero
            return torch.cat([above, at])
        candidates = above
    return candidates[_earliest_best(values[candidates], k)]


def _earliest_best(values: torch.Tensor, k: int) -> torch.Tensor:
    """The set of the first k of a stable descending sort of `values` (no NaN), in ascending
    index order, by the k-th highest value (a selection, 3.5x faster than the sort): all above it,
    then the earliest of those equal to it."""
    m = values.numel()
    if k >= m:
        return torch.arange(m, device=values.device)
    kth = torch.kthvalue(values, m - k + 1).values
    above, equal = values > kth, values == kth
    need = k - int(torch.count_nonzero(above))
    return (above | (equal & (equal.cumsum(0) <= need))).nonzero().squeeze(1)


FEW = 16


def _first_distinct_draws(pool: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """The first `count` distinct values, in draw order, of uniform draws from range(pool)."""
    picked = torch.empty(0, dtype=torch.int64)
    while picked.numel() < count:
        need = count - picked.numel()
        # expected repeats are about count / pool of the draws (under 1/FEW): one round nearly always
        draws = torch.cat([picked, torch.randint(pool, (need + need // 8 + 16,), generator=generator)])
        values, inverse = torch.unique(draws, return_inverse=True)
        first = torch.full_like(values, draws.numel()).scatter_reduce_(
            0, inverse, torch.arange(draws.numel()), "amin")
        picked = draws[first.sort().values[:count]]
    return picked


def random_positions(size: int, count: int, generator: torch.Generator,
                     allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Flat bool tensor of `size` entries with `count` of them True, drawn uniformly (among the flat
    indices `allowed`, when given): the one way every random mask is drawn, so a seed gives the same
    positions whichever builder asks. A randperm of the pool, or for a few of many (count at most
    pool / FEW) the first `count` distinct of uniform draws (the same distribution: sampling without
    replacement; 1% of 16.7M in ~30 ms instead of a 0.35-0.53 s randperm)."""
    flat = torch.zeros(size, dtype=torch.bool)
    pool = size if allowed is None else allowed.numel()
    if count * FEW <= pool:
        picked = _first_distinct_draws(pool, count, generator)
    else:
        picked = torch.randperm(pool, generator=generator)[:count]
    flat[picked if allowed is None else allowed[picked]] = True
    return flat


def pack_flags(flags: torch.Tensor) -> dict:
    """A bool tensor as its shape and 8 flags a byte: what checkpoints store of masks and DST
    records (16.7M flags are 2 MB, not 16.7 MB; a checkpoint of a 4096-wide MLP went from 100 MB
    of flags to 12.6 MB). unpack_flags inverts it."""
    flat = flags.detach().flatten().cpu()
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    columns = flat.view(-1, 8).view(torch.uint8)
    bits = columns[:, 0].clone()
    for i in range(1, 8):  # a column at a time: 4x faster than a weighted sum over rows of 8
        bits |= columns[:, i] << i
    return {"packed_flags": bits, "shape": list(flags.shape)}


def unpack_flags(packed) -> torch.Tensor:
    """pack_flags's bool tensor back; a plain bool tensor (a checkpoint written before packing)
    passes as it is."""
    if isinstance(packed, torch.Tensor):
        return packed
    shape = [int(s) for s in packed["shape"]]
    shifts = torch.arange(8, dtype=torch.uint8)
    flat = ((packed["packed_flags"].unsqueeze(1) >> shifts) & 1).bool().flatten()
    return flat[:math.prod(shape)].view(shape)


def pack_mask_dict(masks: dict) -> dict:
    return {n: pack_flags(m) for n, m in masks.items()}


def unpack_mask_dict(packed: dict) -> dict:
    return {n: unpack_flags(m) for n, m in packed.items()}


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
    def load(cls, path: str | Path, **advice) -> "Masks":
        """`advice`: safe_torch_load's, for a file the user named rather than a run's own."""
        data = safe_torch_load(path, what="mask file", **advice)
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
