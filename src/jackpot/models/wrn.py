"""Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation blocks, CIFAR layout."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import register, scaled


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; the 1x1 shortcut (when shapes change) sees the pre-activation."""

    def __init__(self, f_in: int, f_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(f_in)
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [scaled(c, width) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks, f_in = [], widths[0]
        for stage in range(3):
            for i in range(n):
                blocks.append(PreActBlock(f_in, widths[stage + 1], stride=2 if stage > 0 and i == 0 else 1))
                f_in = widths[stage + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(f_in)
        self.fc = nn.Linear(f_in, num_classes)
        for m in self.modules():  # as in the authors' code: kaiming-normal (fan_out) convs, zero fc bias
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.blocks(self.conv(x))
        out = F.relu(self.bn(out))
        return self.fc(out.mean(dim=(2, 3)))  # global average pool (see vgg.py)


@register(
    "wrn-22-2",
    description="Wide ResNet-22-2 (pre-activation, widths 32/64/128), Zagoruyko & Komodakis 2016",
    input_shape=(3, 32, 32),
    num_classes=10,
    family="wrn",
    input_ranks=(3,),
)
def wrn_22_2(input_shape, num_classes, width=1.0):
    return WideResNet(22, 2, input_shape[0], num_classes, width)
