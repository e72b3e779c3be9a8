"""LeNet-5 (LeCun et al. 1998) in its common modern form: ReLU activations and max-pooling."""

from __future__ import annotations

from torch import nn

from .registry import flat_features, register, scaled


class LeNet5(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0):
        super().__init__()
        c1, c2, f1, f2 = (scaled(c, width) for c in (6, 16, 120, 84))
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        # 400 for 1x28x28 (16*5*5); computed so other image sizes work too.
        n = flat_features(self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(n, f1), nn.ReLU(), nn.Linear(f1, f2), nn.ReLU(), nn.Linear(f2, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register(
    "lenet-5",
    description="LeNet-5 conv net (6@5x5 pad 2, pool, 16@5x5, pool, fc 120-84), ReLU + max-pool",
    input_shape=(1, 28, 28),
    num_classes=10,
    family="lenet",
    input_ranks=(3,),
)
def lenet_5(input_shape, num_classes, width=1.0):
    return LeNet5(input_shape, num_classes, width)
