"""Channel-removed convolutions: a conv whose mask empties whole output channels (or whole input
channels) computed as the smaller dense conv over the channels that are left.

A masked conv's output channel with no kept weight is its bias everywhere (0 without a bias), and
an input channel no kept weight reads contributes nothing; so the conv over the kept input
channels with the kept filters, its outputs put back among the bias-filled removed ones, equals
the masked conv (within float tolerance: the same products, summed over fewer zeros). Only
`groups=1` convs are removed this way; unstructured masks (no whole empty channel) gain nothing
and stay masked dense.

In training (`--execution sparse`) the conv keeps its dense `weight` Parameter, its names and its
hooks (`enable` swaps the module's class in place, `disable` swaps it back), so optimizers, masks
and checkpoints see the same layer; `whole = True` runs the full conv for a step whose mask
method reads the dense gradient (RigL's grow score at pruned positions). In export,
`ExportedChannelConv` is a standalone smaller conv with the bias of the removed channels baked in.
"""
from __future__ import annotations

import torch
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def kept_channels(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output channels, input channels) a conv weight mask (out, in, *kernel) keeps any weight of."""
    live = mask.reshape(mask.shape[0], mask.shape[1], -1).any(2)
    return live.any(1).nonzero().squeeze(1), live.any(0).nonzero().squeeze(1)


def removable(conv: nn.Module, mask: torch.Tensor) -> bool:
    """Whether `mask` empties a whole output or input channel of a groups=1 conv."""
    if not isinstance(conv, CONVS) or conv.groups != 1:
        return False
    out, inp = kept_channels(mask)
    return out.numel() < conv.out_channels or inp.numel() < conv.in_channels


def _restored(conv: nn.Module, x: torch.Tensor, y: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """The full output: `y` (the kept channels' outputs) at `out`, the bias (or 0) elsewhere."""
    spatial = x.shape[2:] if y is None else y.shape[2:]
    if y is None:  # nothing kept: the output does not depend on x; its spatial size by a 1-channel conv
        probe = conv._conv_forward(x[:, :1], conv.weight[:1, :1], None)
        spatial = probe.shape[2:]
    shape = (x.shape[0], conv.out_channels, *spatial)
    dtype = x.dtype if y is None else y.dtype  # under autocast the conv's output dtype, as the masked conv's
    like = x if y is None else y  # channels_last stays channels_last, as the masked conv's output
    fmt = torch.channels_last if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) \
        and not like.is_contiguous() else torch.contiguous_format
    full = torch.empty(shape, dtype=dtype, device=x.device, memory_format=fmt)
    if conv.bias is None:
        full.zero_()
    else:
        full.copy_(conv.bias.to(dtype).view(1, -1, *[1] * len(spatial)).expand(shape))
    return full if y is None else full.index_copy_(1, out, y)


class _ChannelConv:
    """Mixed in front of a Conv class: forward computes only the kept channels."""

    whole = False  # a step that reads the dense gradient runs the whole conv

    def set_channel_mask(self, mask: torch.Tensor) -> None:
        out, inp = kept_channels(mask.to(self.weight.device))
        self._kept_out = None if out.numel() == self.out_channels else out
        self._kept_in = None if inp.numel() == self.in_channels else inp

    def forward(self, x):
        out, inp = self._kept_out, self._kept_in
        # a layer with nothing kept (a collapse) runs whole: its zero weights give the bias, and x
        # and the weight get the zero gradients the masked conv gives them (not None)
        empty = (out is not None and out.numel() == 0) or (inp is not None and inp.numel() == 0)
        if self.whole or empty or (out is None and inp is None):
            return self._conv_forward(x, self.weight, self.bias)
        w, b = self.weight, self.bias
        if out is not None:
            w = w.index_select(0, out)
            b = None if b is None else b.index_select(0, out)
        if inp is not None:
            w, x = w.index_select(1, inp), x.index_select(1, inp)
        y = self._conv_forward(x, w, b)
        return y if out is None else _restored(self, x, y, out)


_CLASSES = {base: type(f"Channel{base.__name__}", (_ChannelConv, base), {}) for base in CONVS}
_BASES = {cls: base for base, cls in _CLASSES.items()}


def enable(conv: nn.Module, mask: torch.Tensor) -> nn.Module:
    """Make `conv` (in place) compute only the channels `mask` keeps; returns it."""
    if type(conv) not in _CLASSES and type(conv) not in _BASES:
        raise TypeError(f"channel removal needs a Conv1d/2d/3d, got {type(conv).__name__}")
    conv.__class__ = _CLASSES.get(type(conv), type(conv))
    conv.set_channel_mask(mask)
    return conv


def disable(conv: nn.Module) -> nn.Module:
    """The plain conv class back (same parameters, names and hooks)."""
    if type(conv) in _BASES:
        conv.__class__ = _BASES[type(conv)]
        for attr in ("_kept_out", "_kept_in", "whole"):
            conv.__dict__.pop(attr, None)
    return conv


class ExportedChannelConv(nn.Module):
    """Inference form: a dense conv over the kept channels only (its own smaller weight), the
    removed output channels filled with their bias."""

    fmt = "channels"

    def __init__(self, conv: nn.Module, mask: torch.Tensor):
        super().__init__()
        out, inp = kept_channels(mask.to(conv.weight.device))
        w = conv.weight.detach() * mask.to(conv.weight)
        base = type(conv) if type(conv) in _CLASSES else _BASES[type(conv)]
        self.inner = base(max(1, inp.numel()), max(1, out.numel()), conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                          padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)
        self.out_channels, self.in_channels = conv.out_channels, conv.in_channels
        self.register_buffer("kept_out", out)
        self.register_buffer("kept_in", inp)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.empty = out.numel() == 0 or inp.numel() == 0
        with torch.no_grad():
            if not self.empty:
                self.inner.weight.copy_(w[out][:, inp])
                if conv.bias is not None:
                    self.inner.bias.copy_(conv.bias.detach()[out])
        self.all_in = inp.numel() == conv.in_channels

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    def dense_weight(self) -> torch.Tensor:
        """The full (out, in, *kernel) weight, zero in the removed channels."""
        w = self.inner.weight.new_zeros(self.out_channels, self.in_channels, *self.inner.weight.shape[2:])
        if not self.empty:
            w[self.kept_out[:, None], self.kept_in[None, :]] = self.inner.weight.detach()
        return w

    def _conv_forward(self, x, w, b):
        return self.inner._conv_forward(x, w, b)

    def forward(self, x):
        if self.empty:
            return _restored(self, x, None, self.kept_out)
        y = self.inner(x if self.all_in else x.index_select(1, self.kept_in))
        return y if self.kept_out.numel() == self.out_channels else _restored(self, x, y, self.kept_out)

    def extra_repr(self):
        return (f"{self.in_channels}->{self.out_channels} channels, kept {self.kept_in.numel()}->"
                f"{self.kept_out.numel()}, format=channels")
