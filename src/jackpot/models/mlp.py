"""Fully connected nets: LeNet-300-100 (Frankle & Carbin 2019) and the MNIST-1D lottery-ticket MLP."""

from __future__ import annotations

from torch import nn

from .registry import numel, register, scaled


class MLP(nn.Module):
    """Flatten -> fc1/ReLU -> fc2/ReLU ... -> output Linear. Any input shape is flattened.

    Layers are named fc1, fc2, ... (the last one is the output layer) so per-layer options read
    naturally on the command line, e.g. --layer-fractions fc3=0.1.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        widths = [in_features, *hidden, num_classes]
        for i in range(len(widths) - 1):
            self.add_module(f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        self.depth = len(widths) - 1

    def forward(self, x):
        h = self.flatten(x)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"fc{i}")(h)
            if i < self.depth:
                h = h.relu()
        return h


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
def lenet_300_100(input_shape, num_classes, width=1.0):
    return MLP(numel(input_shape), (scaled(300, width), scaled(100, width)), num_classes)


@register(
    "mnist1d-mlp",
    description="MNIST-1D lottery-ticket MLP (40-500-500-10, residual 2nd hidden layer), Greydanus 2020",
    input_shape=(40,),
    num_classes=10,
    family="mlp",
)
def mnist1d_mlp(input_shape, num_classes, width=1.0):
    # Widths from greydanus/mnist1d notebooks/lottery_tickets.ipynb: SparseMLP with
    # model_args.hidden_size = 500 (the MLPBase default of 100 is overridden there); ~276k params.
    return ResidualMLP(numel(input_shape), scaled(500, width), num_classes)
