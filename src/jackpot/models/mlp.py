"""Fully connected nets: LeNet-300-100 (Frankle & Carbin 2019) and the MNIST-1D lottery-ticket MLP."""

from __future__ import annotations

from torch import nn

from .registry import numel, register


class MLP(nn.Module):
    """Flatten -> Linear/ReLU stack -> Linear. Any input shape is flattened."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class ResidualMLP(nn.Module):
    """Greydanus' MNIST-1D lottery-ticket MLP: h = relu(W1 x); h = h + relu(W2 h); y = W3 h."""

    def __init__(self, in_features: int, hidden: int, num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(in_features, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h = self.linear1(self.flatten(x)).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


@register(
    "lenet-300-100",
    description="LeNet-300-100 MLP (784-300-100-10, ReLU), Frankle & Carbin 2019",
    input_shape=(1, 28, 28),
    num_classes=10,
    family="mlp",
)
def lenet_300_100(input_shape, num_classes):
    return MLP(numel(input_shape), (300, 100), num_classes)


@register(
    "mnist1d-mlp",
    description="MNIST-1D lottery-ticket MLP (40-500-500-10, residual 2nd hidden layer), Greydanus 2020",
    input_shape=(40,),
    num_classes=10,
    family="mlp",
)
def mnist1d_mlp(input_shape, num_classes):
    # Widths from greydanus/mnist1d notebooks/lottery_tickets.ipynb: SparseMLP with
    # model_args.hidden_size = 500 (the MLPBase default of 100 is overridden there); ~276k params.
    return ResidualMLP(numel(input_shape), 500, num_classes)
