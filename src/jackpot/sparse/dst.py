"""Dynamic sparse training: one drop/grow skeleton; each method is a small choice of scores.

Skeleton (RigL's, per masked tensor, at an update step with drop fraction f):
  1. n_drop = floor(f * active); keep the (active - n_drop) highest drop scores among active weights.
  2. grow the n_grow highest grow scores among every position not kept, *just-dropped ones included*:
     a weight dropped and regrown in the same update keeps its value and optimizer state.
  3. newly activated weights start at `grow_init` (0 by default) with zero optimizer state;
     dropped weights become exactly 0 with zero optimizer state (Sparsifier.set_masks).
By default n_grow = n_drop per layer, so every layer keeps its active count exactly; SNFS and DSR
redistribute the grown weights across layers and keep the total count exactly.

Dense statistics of pruned weights, kept by explicit choice: RigL reads the dense gradient
(available between backward() and the optimizer step, since the Sparsifier masks gradients only
inside the step) on update steps, summed over the last `grad_accumulation` batches; SNFS keeps
its own exponential moving average (0.9) of the dense gradient, updated every step (the
optimizer's momentum of pruned weights is zero by the engine's invariant).

Updates happen at steps t > 0 with t % delta_t == 0 and t < t_end (Algorithm 1 of the RigL paper).
The optimizer step still runs on update steps unless skip_step=True (RigL's TensorFlow code skips
it; SET's applies the gradients first) — a documented choice, selectable per run.

Among equal scores the earliest index wins, for drop and grow alike (masks.top_k's "index" rule:
the same masks on a CPU and a GPU, masked or sparse execution). Grow scores are ranked as
float32 (masks.top_k) whatever the weights' dtype, never cast to it: in
bf16, distinct scores would tie and change which weights grow (SNFS's statistic is float32 too). On a GPU an update reads counts back to the host once for
all layers (stacked), not per layer; the per-step statistic is one foreach pair for all layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import derive_seed
from ..errors import JackpotError
from ..models.init import sample_init
from .masks import Masks, pack_mask_dict, top_k, top_k_indices, unpack_mask_dict
from .schedules import Schedule
from .sparsifier import Sparsifier

# each drop schedule (`sparse.drop_schedule`) as a kind of the one schedule family
_SCHEDULE_KIND = {"cosine": "cosine", "constant": "constant", "inverse-power": "polynomial"}
DROP_SCHEDULES = tuple(_SCHEDULE_KIND)


@dataclass(frozen=True)
class UpdateSchedule:
    delta_t: int = 100
    alpha: float = 0.3
    t_end: int = 0
    kind: str = "cosine"
    power: int = 3

    def __post_init__(self):
        if self.delta_t <= 0:
            raise JackpotError(f"`sparse.delta_t` must be a positive number of steps, got {self.delta_t}")
        if not 0.0 <= self.alpha <= 1.0:
            raise JackpotError(f"`sparse.alpha` (drop fraction) must be in [0, 1], got {self.alpha}")
        if self.kind not in DROP_SCHEDULES:
            raise JackpotError(f"unknown drop schedule {self.kind!r}; choose {', '.join(DROP_SCHEDULES)}")

    def is_update(self, step: int) -> bool:
        return 0 < step < self.t_end and step % self.delta_t == 0

    def drop_fraction(self, step: int) -> float:
        """alpha, decayed from step 0 to t_end: cosine (RigL), constant or inverse-power
        (the schedule family's polynomial decaying to 0)."""
        schedule = Schedule(_SCHEDULE_KIND[self.kind], self.alpha, 0.0, self.power)
        return schedule.value(step, max(1, self.t_end))


@dataclass
class Layer:
    """What a method sees of one masked tensor at an update."""

    name: str
    weight: torch.Tensor       # current values (pruned entries are 0)
    mask: torch.Tensor         # bool, current
    grad: torch.Tensor | None  # dense gradient (accumulated), when the method asks for it
    stat: torch.Tensor | None  # method-specific running statistic (SNFS: EMA of dense gradient)
    generator: torch.Generator
    active: int | None = None  # int(mask.sum()); update() reads every layer's in one host sync
    # the active positions (flat, ascending) when the caller holds them (sparse execution's
    # layers do): the drop then reads only the active weights, not a dense pass over the mask
    active_index: torch.Tensor | None = None

    def __post_init__(self):
        if self.active is None:
            self.active = int(self.mask.sum())


@dataclass
class _Change:
    """One layer's update. By mask: the new mask, `new` (grown positions not active before) and
    `regrown` (grown positions that were: dropped and grown back), bool masks of the weight's shape.
    By index (a layer held as positions): also the new flat positions and the grown ones
    (ascending); `new` flags which grown ones are new, `regrown` is None."""

    mask: torch.Tensor
    positions: torch.Tensor | None
    grown: torch.Tensor | None
    new: torch.Tensor
    regrown: torch.Tensor | None

    def fresh(self, count: int) -> torch.Tensor:
        """The newly active positions, `count` of them (read back already): the bool mask, or
        their ascending flat indices (nonzero_static: no second host sync on a GPU)."""
        if self.grown is None:
            return self.new
        return self.grown[torch.nonzero_static(self.new, size=count).squeeze(1)]


class DropGrow:
    """Base class. Override `grow_score` (and optionally `drop_score`, `grow_counts`)."""

    needs_grad = False          # read the dense gradient on update steps
    needs_stat = False          # keep a per-step statistic of the dense gradient
    stat_decay = 0.9
    adapted: tuple[str, ...] = ()  # attributes a method adapts during the run: kept for resume

    def __init__(self, schedule: UpdateSchedule, grow_init: str = "zero", skip_step: bool = False,
                 grad_accumulation: int = 1, seed: int = 0, weight_init: str = "default",
                 init_values: dict[str, torch.Tensor] | None = None):
        if grad_accumulation < 1:
            raise JackpotError(f"`sparse.grad_accumulation` must be >= 1, got {grad_accumulation}")
        self.schedule = schedule
        self.grow_init = grow_init
        self.weight_init = weight_init  # the model's --init: grown weights redraw from it
        # with the architecture's own init (--init default): each layer's initial values, which
        # grown weights are redrawn from (PyTorch's uniform for MLPs, kaiming-normal for ResNets...)
        self.init_values = {n: v.detach().flatten().cpu() for n, v in (init_values or {}).items()}
        self.skip_step = skip_step
        self.grad_accumulation = grad_accumulation
        self.seed = seed
        self.stats: dict[str, torch.Tensor] = {}
        self.grad_sum: dict[str, torch.Tensor] = {}
        self.history: list[dict] = []
        # per layer, every position active at some point so far (the union of the masks over time):
        # how much of the dense network the run has explored
        self.ever_active: dict[str, torch.Tensor] = {}

    # --- method hooks -----------------------------------------------------------------------------
    def drop_score(self, layer: Layer) -> torch.Tensor:
        return layer.weight.abs()

    def grow_score(self, layer: Layer) -> torch.Tensor:
        raise NotImplementedError

    def grow_counts(self, layers: list[Layer], dropped: dict[str, int]) -> dict[str, int]:
        """How many weights each layer grows; default: exactly what it dropped."""
        return dict(dropped)

    def drop_counts(self, layers: list[Layer], fraction: float) -> dict[str, int]:
        return {l.name: int(math.floor(fraction * l.active)) for l in layers}

    def dense_gradient_at(self, step: int) -> bool:
        """Whether `step` computes the dense gradient (for the FLOPs count): SNFS every step; RigL on
        update steps and the `grad_accumulation - 1` batches before each (see after_backward)."""
        if self.needs_stat:
            return True
        if not self.needs_grad:
            return False
        if self.schedule.is_update(step):
            return True
        next_update = (step // self.schedule.delta_t + 1) * self.schedule.delta_t
        return (self.grad_accumulation > 1 and 0 < next_update - step < self.grad_accumulation
                and next_update < self.schedule.t_end)

    # --- training-loop callback ------------------------------------------------------------------
    def after_backward(self, step: int, model: torch.nn.Module, sparsifier: Sparsifier) -> bool:
        """Called between backward() and the optimizer step. Returns True to skip the step."""
        params = dict(model.named_parameters())
        if self.needs_stat:
            with torch.no_grad():
                stats, grads = [], []
                for n in sparsifier.masks:
                    g = params[n].grad
                    if g is None:
                        continue
                    if n not in self.stats:  # float32 at least: an EMA in bf16 loses the small updates
                        self.stats[n] = torch.zeros_like(g, dtype=torch.promote_types(g.dtype, torch.float32))
                    elif self.stats[n].device != g.device:  # restored from a CPU checkpoint
                        self.stats[n] = self.stats[n].to(g.device)
                    stats.append(self.stats[n])
                    grads.append(g)
                if stats:  # one foreach pair for all layers, not two kernels per layer
                    torch._foreach_mul_(stats, self.stat_decay)
                    torch._foreach_add_(stats, grads, alpha=1 - self.stat_decay)
        window = self.needs_grad and self.grad_accumulation > 1
        next_update = (step // self.schedule.delta_t + 1) * self.schedule.delta_t
        if window and 0 < next_update - step < self.grad_accumulation and next_update < self.schedule.t_end:
            with torch.no_grad():  # collect the batches before the update
                for n in sparsifier.masks:
                    g = params[n].grad
                    if g is not None:
                        prev = self.grad_sum.get(n)
                        self.grad_sum[n] = g.clone() if prev is None else prev.to(g.device) + g
        if not self.schedule.is_update(step):
            return False
        self.update(step, model, sparsifier)
        return self.skip_step

    @torch.no_grad()
    def update(self, step: int, model: torch.nn.Module, sparsifier: Sparsifier) -> dict:
        params = dict(model.named_parameters())
        old = sparsifier.masks
        index = {n: getattr(params[n], "active_index", None) for n in old}
        counted = [n for n in old if index[n] is None]
        active = dict(zip(counted, _counts([old[n] for n in counted])))  # one host sync for all
        layers = []
        for i, (n, m) in enumerate(old.items()):
            grad = None
            if self.needs_grad and params[n].grad is not None:
                g = params[n].grad
                grad = g + self.grad_sum[n].to(g.device) if n in self.grad_sum else g
            g = torch.Generator().manual_seed(derive_seed(self.seed, "dst", step, i))
            count = active[n] if index[n] is None else index[n].numel()
            layers.append(Layer(n, params[n].detach(), m, grad, self.stats.get(n), g, count, index[n]))
        self.grad_sum = {}
        fraction = self.schedule.drop_fraction(step)
        n_drop = self.drop_counts(layers, fraction)
        # the counts top_k keeps and may grow into, known here: top_k need not read them back
        n_kept = {l.name: min(l.active, max(0, l.active - n_drop[l.name])) for l in layers}
        kept = {l.name: self._keep(l, n_kept[l.name]) for l in layers}
        n_grow = self.grow_counts(layers, n_drop)
        changes = {}
        for l in layers:
            if kept[l.name].dtype == torch.bool:
                changes[l.name] = self._change_by_mask(l, kept[l.name], n_grow[l.name], n_kept[l.name])
            else:
                changes[l.name] = self._change_by_index(l, kept[l.name], n_grow[l.name])
        new = Masks({n: c.mask for n, c in changes.items()})
        # a sparse execution's layers: their rebuilds take the new positions as they are
        sparsifier.set_masks(new, positions={n: c.positions for n, c in changes.items() if c.positions is not None})
        ever = []
        for l in layers:
            seen = self.ever_active.get(l.name)
            seen = l.mask.clone() if seen is None else seen.to(l.mask.device)
            c = changes[l.name]
            seen |= l.mask
            if c.positions is None:
                seen |= c.mask
            else:  # kept positions were active: only grown ones can be new to `seen`
                seen.view(-1)[c.grown] = True
            self.ever_active[l.name] = seen
            ever.append(seen)
        k = len(layers)  # the grown, regrown and explored counts, read back together
        counts = _counts([c.new for c in changes.values()] + [c.regrown for c in changes.values()
                                                             if c.regrown is not None] + ever)
        n_fresh, regrown = counts[:k], iter(counts[k:len(counts) - k])
        n_regrown = [c.grown.numel() - n if c.regrown is None else next(regrown)
                     for c, n in zip(changes.values(), n_fresh)]
        for l, n_new in zip(layers, n_fresh):
            fresh = changes[l.name].fresh(n_new)
            if self.grow_init != "zero" and n_new:
                values = self._grow_values(l, n_new)
                if fresh.dtype == torch.bool:
                    # masked_scatter_ fills the True positions in row-major order, as fresh-indexing
                    # would, without a host sync
                    params[l.name].data.masked_scatter_(fresh, values)
                else:  # ascending flat positions: the same row-major order
                    params[l.name].data.view(-1)[fresh] = values
            sparsifier.zero_state_at(l.name, fresh)
        record = {"step": step, "drop_fraction": fraction, "dropped": sum(n_drop.values()),
                  "grown_new": sum(n_fresh), "regrown": sum(n_regrown),
                  "ever_active": sum(counts[len(counts) - k:])
                  / max(1, sum(m.numel() for m in self.ever_active.values()))}
        self.history.append(record)
        return record

    def _keep(self, layer: Layer, k: int) -> torch.Tensor:
        """The k highest drop scores among the active weights (earliest index among ties): a mask,
        or, when the layer's active positions are known, their flat indices (ascending)."""
        if layer.active_index is None or type(self).drop_score is not DropGrow.drop_score:
            return top_k(self.drop_score(layer), k, layer.mask, ties="index", n_allowed=layer.active)
        if k >= layer.active:
            return layer.active_index
        # |w| of the active weights only, in ascending position: the set top_k picks from the mask
        best = top_k(layer.weight.flatten()[layer.active_index].abs(), k, ties="index")
        return layer.active_index[best.flatten()]  # a bool mask over the ascending active positions

    def _change_by_mask(self, layer: Layer, kept: torch.Tensor, n_grow: int, n_kept: int) -> "_Change":
        # the score's own dtype (float32 for bf16 weights' scores): top_k compares as float32;
        # every position not kept may grow
        grow = top_k(self.grow_score(layer), n_grow, ~kept, ties="index",
                     n_allowed=layer.mask.numel() - n_kept)
        return _Change(kept | grow, None, None, grow & ~layer.mask, grow & layer.mask)

    def _change_by_index(self, layer: Layer, kept: torch.Tensor, n_grow: int) -> "_Change":
        """The same update as _change_by_mask for a layer held as positions (a sparse layer): the
        grow excludes the kept positions by index, the new positions are the kept and grown ones,
        and no dense bool pass is made but the new mask's."""
        score = self.grow_score(layer)
        own = score.dtype == torch.float32 and score._base is None and all(
            t is None or t.data_ptr() != score.data_ptr() for t in (layer.weight, layer.grad, layer.stat))
        grown = top_k_indices(score, n_grow, kept, ties="index", scratch=own)
        positions = torch.cat([kept, grown]).sort().values
        mask = torch.zeros(layer.mask.numel(), dtype=torch.bool, device=layer.mask.device)
        mask[positions] = True
        grown = grown.sort().values
        # grown positions that were not active before the update (the rest were dropped and regrown)
        was_active = layer.mask.reshape(-1)[grown]
        return _Change(mask.view(layer.mask.shape), positions, grown, ~was_active, None)

    def _grow_values(self, layer: Layer, k: int) -> torch.Tensor:
        if self.grow_init == "init" and self.weight_init != "default" and layer.weight.dim() > 1:
            return sample_init(self.weight_init, layer.weight.shape, k, layer.generator).to(layer.weight)
        if self.grow_init == "init" and layer.name in self.init_values:  # a draw of the layer's own init
            pool = self.init_values[layer.name]
            return pool[torch.randint(pool.numel(), (k,), generator=layer.generator)].to(layer.weight)
        if self.grow_init == "init":  # no initial values given: PyTorch's kaiming-uniform bound of a fan-in
            fan_in = layer.weight[0].numel() if layer.weight.dim() > 1 else layer.weight.numel()
            bound = 1.0 / math.sqrt(max(1, fan_in))
            return (torch.rand(k, generator=layer.generator) * 2 - 1).mul_(bound).to(layer.weight)
        raise JackpotError(f"unknown `sparse.grow_init` {self.grow_init!r}; choose zero or init")

    def state_dict(self) -> dict:
        return {"stats": dict(self.stats), "grad_sum": dict(self.grad_sum), "history": list(self.history),
                "ever_active": pack_mask_dict(self.ever_active), **{a: getattr(self, a) for a in self.adapted}}

    def load_state_dict(self, state: dict) -> None:
        self.stats = dict(state.get("stats", {}))
        self.grad_sum = dict(state.get("grad_sum", {}))
        self.history = list(state.get("history", []))
        self.ever_active = unpack_mask_dict(state.get("ever_active", {}))
        for a in self.adapted:
            setattr(self, a, state.get(a, getattr(self, a)))

    def summary(self) -> dict:
        """Kept in the stage's done.json (the checkpoint holding `history` is deleted at the end)."""
        return {"mask_updates": list(self.history)}


# --- the methods ------------------------------------------------------------------------------------

class Static(DropGrow):
    """The fixed-mask baseline: no updates."""

    def after_backward(self, step, model, sparsifier) -> bool:
        return False


def random_score(layer: Layer) -> torch.Tensor:
    """Uniform grow scores from the layer's update generator (drawn on the CPU: same on any device)."""
    return torch.rand(layer.weight.shape, generator=layer.generator).to(layer.weight.device)


class SET(DropGrow):
    """Mocanu et al. 2018: drop smallest |w|, grow uniformly at random."""

    def grow_score(self, layer: Layer) -> torch.Tensor:
        return random_score(layer)


class RigL(DropGrow):
    """Evci et al. 2020: drop smallest |w|, grow largest |dense gradient|."""

    needs_grad = True

    def grow_score(self, layer: Layer) -> torch.Tensor:
        return layer.grad.abs()


class SNFS(DropGrow):
    """Dettmers & Zettlemoyer 2019: grow by |momentum of the dense gradient|, and redistribute the
    grown weights across layers in proportion to each layer's mean momentum magnitude over its
    active weights (capped by the layer's free positions, overflow re-spread)."""

    needs_stat = True

    def grow_score(self, layer: Layer) -> torch.Tensor:
        return layer.stat.abs()

    def grow_counts(self, layers, dropped):
        total = sum(dropped.values())
        # mean |momentum| over each layer's active weights, taken in the order stat[mask] would
        # (nonzero_static: no host sync), all layers read back at once
        means = [l.stat.abs().flatten()[torch.nonzero_static(l.mask.flatten(), size=l.active).squeeze(1)].mean()
                 for l in layers if l.active]
        means = iter(torch.stack(means).tolist() if means else [])
        weight = {l.name: next(means) if l.active else 0.0 for l in layers}
        capacity = {l.name: l.mask.numel() - l.active + dropped[l.name] for l in layers}
        return _apportion(total, weight, capacity)


class DSR(DropGrow):
    """Mostafa & Wang 2019: drop active weights below a global adaptive threshold H (each layer
    keeps at least one), adapt H toward a target number of drops, reallocate the dropped count
    across layers in proportion to surviving weights, grow randomly (excluding just-dropped)."""

    adapted = ("threshold",)

    def __init__(self, *args, threshold: float = 1e-3, tolerance: float = 0.1, **kw):
        super().__init__(*args, **kw)
        self.threshold, self.tolerance = threshold, tolerance

    def drop_counts(self, layers, fraction):
        below = _counts([(l.weight.abs() < self.threshold) & l.mask for l in layers])
        counts = {l.name: min(n, max(0, l.active - 1)) for l, n in zip(layers, below)}
        dropped, target = sum(counts.values()), fraction * sum(l.active for l in layers)
        if dropped > (1 + self.tolerance) * target:
            self.threshold /= 2
        elif dropped < (1 - self.tolerance) * target:
            self.threshold *= 2
        return counts

    def grow_score(self, layer: Layer) -> torch.Tensor:
        return random_score(layer).masked_fill(layer.mask, -1.0)  # just-dropped positions grow last

    def grow_counts(self, layers, dropped):
        surviving = {l.name: float(l.active - dropped[l.name]) for l in layers}
        return _apportion(sum(dropped.values()), surviving, {l.name: l.mask.numel() - l.active for l in layers})


def _counts(masks: list[torch.Tensor]) -> list[int]:
    """int(m.sum()) of each bool tensor, read back to the host in one sync (each int() is one)."""
    if not masks:
        return []
    sums = [torch.count_nonzero(m) for m in masks]  # a bool sum widens to int64 first: 16x slower
    device = sums[0].device
    return torch.stack([t.to(device) for t in sums]).tolist()


def _apportion(total: int, weight: dict[str, float], capacity: dict[str, int]) -> dict[str, int]:
    """Split `total` in proportion to `weight`, each share capped by `capacity`; capped overflow is
    re-spread over the others and largest remainders take the leftover units, so the shares sum to
    `total` exactly whenever the capacities allow it."""
    out = {n: 0 for n in weight}
    remaining = min(total, sum(capacity.values()))
    while remaining > 0:
        open_ = [n for n in weight if out[n] < capacity[n]]
        w = {n: max(weight[n], 0.0) for n in open_}
        s = sum(w.values())
        shares = {n: remaining * (w[n] / s if s > 0 else 1 / len(open_)) for n in open_}
        give = {n: min(int(shares[n]), capacity[n] - out[n]) for n in open_}
        left = remaining - sum(give.values())
        for n in sorted(open_, key=lambda n: shares[n] - int(shares[n]), reverse=True):
            if left and give[n] < capacity[n] - out[n]:
                give[n] += 1
                left -= 1
        for n in open_:
            out[n] += give[n]
        remaining = left
    return out


METHODS = {"static": Static, "set": SET, "rigl": RigL, "snfs": SNFS, "dsr": DSR}


def make_method(name: str, schedule: UpdateSchedule, **kw) -> DropGrow:
    if name not in METHODS:
        raise JackpotError(f"unknown sparse training method {name!r}; choose {', '.join(METHODS)}")
    return METHODS[name](schedule, **kw)
