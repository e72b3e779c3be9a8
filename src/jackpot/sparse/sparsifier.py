"""Attaches masks to a model and its optimizer; keeps pruned weights at exactly zero.

How: a step pre-hook on the optimizer multiplies the gradients of masked parameters by their
masks right before each step (one fused `_foreach_mul_`), and the optimizer state is zeroed at
positions when they are pruned. With zero weight, zero gradient and zero state, SGD (momentum,
Nesterov, weight decay), Adam and AdamW all leave a pruned weight at exactly 0.0, so no second
pass over the weights is needed. Between `backward()` and `optimizer.step()` the gradient of a
pruned weight is still the dense gradient (methods like RigL read it there).
"""
from __future__ import annotations

import torch

from .masks import Masks


class Sparsifier:
    def __init__(self, model: torch.nn.Module, masks: Masks):
        masks.check_against(model)
        self.model = model
        self._params = dict(model.named_parameters())
        self._optimizers: list[torch.optim.Optimizer] = []
        self._handles = []
        self.set_masks(masks)

    @property
    def masks(self) -> Masks:
        return self._masks

    def set_masks(self, masks: Masks, positions: dict[str, torch.Tensor] | None = None) -> None:
        """Install new masks: zero the weights and optimizer state that are now pruned.
        (`positions`, the new masks' flat positions some callers hold, matter to sparse execution only.)"""
        masks.check_against(self.model)
        self._masks = Masks({n: m.to(self._params[n].device) for n, m in masks.items()})
        self._names = list(self._masks)
        self._float = [self._masks[n].to(self._params[n].dtype) for n in self._names]
        self.apply_to_weights()
        for opt in self._optimizers:
            self._zero_state(opt)

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        torch._foreach_mul_([self._params[n].data for n in self._names], self._float)

    def attach(self, optimizer: torch.optim.Optimizer) -> "Sparsifier":
        """Mask gradients before every step of `optimizer` and zero its state when pruning."""
        self._optimizers.append(optimizer)
        self._handles.append(optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.mask_gradients()))
        self._zero_state(optimizer)
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._optimizers = [], []

    @torch.no_grad()
    def mask_gradients(self) -> None:
        pairs = [(self._params[n].grad, m) for n, m in zip(self._names, self._float)
                 if self._params[n].grad is not None]
        if pairs:
            grads, ms = zip(*pairs)
            torch._foreach_mul_(list(grads), list(ms))

    @torch.no_grad()
    def zero_state_at(self, name: str, positions: torch.Tensor) -> None:
        """Zero every attached optimizer's state of parameter `name` at `positions` (bool, its
        shape, or flat indices): e.g. weights a DST update has just grown start with no momentum."""
        if positions.dtype != torch.bool:
            flags = torch.zeros(self._params[name].numel(), dtype=torch.bool, device=positions.device)
            flags[positions.reshape(-1)] = True
            positions = flags.view(self._params[name].shape)
        for opt in self._optimizers:
            for value in opt.state.get(self._params[name], {}).values():
                if isinstance(value, torch.Tensor) and value.shape == positions.shape:
                    value.masked_fill_(positions.to(value.device), 0.0)  # bool indexing would sync

    @torch.no_grad()
    def _zero_state(self, optimizer: torch.optim.Optimizer) -> None:
        for n, m in zip(self._names, self._float):
            state = optimizer.state.get(self._params[n], {})
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == m.shape:
                    value.mul_(m)
