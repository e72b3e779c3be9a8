"""Conv-2/4/6 of Frankle & Carbin 2019 (VGG-like, scaled down, for CIFAR-10).

At 3x32x32 / 10 classes: Conv-2 4.30M, Conv-4 2.43M, Conv-6 2.26M parameters. The paper's table
lists 1.7M for Conv-6, but its stated layers (fc input 256*4*4) give 2.26M; we follow the layers.
"""

from __future__ import annotations

from torch import nn

from .registry import flat_features, register, scaled

_PLANS = {2: (64,), 4: (64, 128), 6: (64, 128, 256)}  # one entry per conv pair


class ConvN(nn.Module):
    """Pairs of 3x3 'same' convs + ReLU, 2x2 max-pool after each pair, then fc 256-256-classes."""

    def __init__(self, widths: tuple[int, ...], input_shape: tuple[int, ...], num_classes: int, fc: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        c = input_shape[0]
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        n = flat_features(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(n, fc), nn.ReLU(), nn.Linear(fc, fc), nn.ReLU(), nn.Linear(fc, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _make(depth: int):
    widths = _PLANS[depth]
    convs = ",".join(str(w) for w in widths for _ in range(2))

    @register(
        f"conv-{depth}",
        description=f"Conv-{depth} (3x3 convs {convs}, max-pool per pair, fc 256-256), Frankle & Carbin 2019",
        input_shape=(3, 32, 32),
        num_classes=10,
        family="conv",
        input_ranks=(3,),
    )
    def build(input_shape, num_classes, width=1.0):
        return ConvN(tuple(scaled(w, width) for w in widths), input_shape, num_classes, scaled(256, width))


for _d in _PLANS:
    _make(_d)
