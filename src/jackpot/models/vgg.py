"""CIFAR VGG with BatchNorm, as in OpenLTH ``cifar_vgg`` (no final max-pool, single Linear head)."""

from __future__ import annotations

from torch import nn

from .registry import register, scaled

# Standard VGG configs minus the last 'M': OpenLTH average-pools the final 2x2 map instead.
_PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    def __init__(self, plan, in_channels: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, spec, 3, padding=1), nn.BatchNorm2d(spec), nn.ReLU()]
                c = spec
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        # A global average pool equals OpenLTH's AvgPool2d(2) at 32x32 and also accepts larger images;
        # a mean rather than AdaptiveAvgPool2d, whose CUDA backward is not deterministic.
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _make(depth: int):
    @register(
        f"vgg-{depth}",
        description=f"CIFAR VGG-{depth} with BatchNorm and a single Linear(512, classes) head (OpenLTH)",
        input_shape=(3, 32, 32),
        num_classes=10,
        family="vgg",
        input_ranks=(3,),
    )
    def build(input_shape, num_classes, width=1.0):
        plan = [s if s == "M" else scaled(s, width) for s in _PLANS[depth]]
        return CifarVGG(plan, input_shape[0], num_classes)


for _d in _PLANS:
    _make(_d)
