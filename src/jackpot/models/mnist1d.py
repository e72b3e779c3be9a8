"""MNIST-1D ConvBase (Greydanus 2020, greydanus/mnist1d notebooks/models.py)."""

from __future__ import annotations

from torch import nn

from .registry import flat_features, register, scaled


class ConvBase1d(nn.Module):
    """Three stride-2 Conv1d layers (25 channels; kernels 5, 3, 3; padding 1), ReLU, then Linear.

    Kernel sizes follow the reference code (conv1 k=5, conv2/conv3 k=3), giving 25*5 = 125 features
    at length 40 and 5,210 parameters at 10 classes. A (L,) input is treated as one channel.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 25):
        super().__init__()
        in_ch = 1 if len(input_shape) == 1 else input_shape[0]
        self.features = nn.Sequential(
            nn.Conv1d(in_ch, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        n = flat_features(self.features, (in_ch, input_shape[-1]))
        self.linear = nn.Linear(n, num_classes)

    def forward(self, x):
        if x.dim() == 2:  # (B, L) -> (B, 1, L)
            x = x.unsqueeze(1)
        return self.linear(self.features(x))


@register(
    "mnist1d-cnn",
    description="MNIST-1D ConvBase: 3 Conv1d (25 ch, stride 2) + Linear, Greydanus 2020",
    input_shape=(40,),
    num_classes=10,
    family="mnist1d",
    input_ranks=(1, 2),
)
def mnist1d_cnn(input_shape, num_classes, width=1.0):
    return ConvBase1d(input_shape, num_classes, scaled(25, width))
