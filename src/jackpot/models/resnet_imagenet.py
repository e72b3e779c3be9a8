"""ImageNet ResNet-18/50 (He et al. 2016), torchvision-equivalent layout and init (no torchvision)."""

from __future__ import annotations

from torch import nn

from .registry import register, scaled


def _downsample(f_in: int, f_out: int, stride: int) -> nn.Module | None:
    if stride == 1 and f_in == f_out:
        return None
    return nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, f_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(f_in, planes, stride)  # after the convs: data-flow order

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision 'ResNet v1.5': the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, f_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(f_in, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    def __init__(self, block, layers: tuple[int, ...], in_channels: int, num_classes: int, width: float = 1.0):
        super().__init__()
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        f_in, stages = stem, []
        for i, n in enumerate(layers):
            planes = scaled(64 * 2**i, width)
            blocks = []
            for j in range(n):
                blocks.append(block(f_in, planes, stride=2 if i > 0 and j == 0 else 1))
                f_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(f_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))  # global average pool (see vgg.py)


def _make(depth: int, block, layers):
    @register(
        f"resnet-{depth}",
        description=f"ImageNet ResNet-{depth} ({block.__name__}, stages {layers}), He et al. 2016",
        input_shape=(3, 224, 224),
        num_classes=1000,
        family="resnet-imagenet",
        input_ranks=(3,),
    )
    def build(input_shape, num_classes, width=1.0):
        return ImageNetResNet(block, layers, input_shape[0], num_classes, width)


_make(18, BasicBlock, (2, 2, 2, 2))
_make(50, Bottleneck, (3, 4, 6, 3))
