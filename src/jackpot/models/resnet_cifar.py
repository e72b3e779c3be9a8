"""CIFAR ResNets (He et al. 2016, sec. 4.2) in the OpenLTH ``cifar_resnet`` form.

Depth 6n+2, three stages of n BasicBlocks with 16/32/64 channels; the shortcut is a 1x1 stride-2
conv + BN wherever the shape changes (OpenLTH's choice, rather than the paper's option A).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import register, scaled


class BasicBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        # Registered after conv2 so module order follows data flow.
        self.shortcut = nn.Sequential()
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem = scaled(16, width)
        self.conv = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(stem)
        blocks, f_in = [], stem
        for stage in range(3):
            f_out = scaled(16 * 2**stage, width)
            for i in range(n):
                blocks.append(BasicBlock(f_in, f_out, stride=2 if stage > 0 and i == 0 else 1))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(f_in, num_classes)
        for m in self.modules():  # He et al.: kaiming-normal convs; BN weight 1, bias 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        return self.fc(out.mean(dim=(2, 3)))  # global average pool (see vgg.py)


def _make(depth: int):
    @register(
        f"resnet-{depth}",
        description=f"CIFAR ResNet-{depth} (16/32/64 channels, BasicBlock, 1x1-conv shortcuts), He et al. 2016",
        input_shape=(3, 32, 32),
        num_classes=10,
        family="resnet-cifar",
        input_ranks=(3,),
    )
    def build(input_shape, num_classes, width=1.0):
        return CifarResNet(depth, input_shape[0], num_classes, width)


for _d in (20, 32, 56):
    _make(_d)
