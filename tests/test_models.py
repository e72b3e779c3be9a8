"""Tests for jackpot.models: registry, shapes, parameter counts, layer naming, determinism."""

import pytest
import torch
from torch import nn

from jackpot.errors import JackpotError
from jackpot.models import (
    ModelInfo, create_model, first_layer_name, list_models, model_names, output_layer_name,
)

EXPECTED = {
    "lenet-300-100", "lenet-5", "mnist1d-mlp", "mnist1d-cnn", "conv-2", "conv-4", "conv-6",
    "vgg-11", "vgg-16", "vgg-19", "resnet-20", "resnet-32", "resnet-56", "wrn-22-2",
    "resnet-18", "resnet-50",
}
IMAGENET = {"resnet-18", "resnet-50"}
SMALL = sorted(EXPECTED - IMAGENET)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def forward(m: nn.Module, shape, batch=2):
    m.eval()
    with torch.no_grad():
        return m(torch.randn(batch, *shape))


def test_registry_lists_all_models():
    assert set(model_names()) == EXPECTED
    infos = list_models()
    assert all(isinstance(i, ModelInfo) for i in infos)
    assert [i.name for i in infos] == model_names()
    with pytest.raises(Exception):  # frozen
        infos[0].name = "x"


@pytest.mark.parametrize("name", SMALL)
def test_default_build_and_forward(name):
    info = next(i for i in list_models() if i.name == name)
    m = create_model(name)
    out = forward(m, info.default_input_shape)
    assert out.shape == (2, info.default_num_classes)


@pytest.mark.parametrize("name,shape,classes", [
    ("lenet-300-100", (40,), 10),           # MNIST-1D
    ("lenet-300-100", (64,), 10),           # sklearn digits, flat
    ("lenet-300-100", (3, 32, 32), 100),
    ("mnist1d-mlp", (1, 28, 28), 10),
    ("lenet-5", (3, 32, 32), 10),
    ("conv-2", (1, 8, 8), 10),              # sklearn digits as an image
    ("mnist1d-cnn", (1, 40), 10),
    ("mnist1d-cnn", (64,), 10),
    ("conv-2", (1, 28, 28), 10),
    ("conv-6", (3, 32, 32), 100),
    ("vgg-11", (3, 32, 32), 100),
    ("resnet-20", (1, 28, 28), 10),
    ("resnet-20", (3, 32, 32), 100),
    ("wrn-22-2", (3, 16, 16), 200),
])
def test_dataset_shapes(name, shape, classes):
    out = forward(create_model(name, shape, classes), shape)
    assert out.shape == (2, classes)


@pytest.mark.parametrize("name,count", [("resnet-18", 11_689_512), ("resnet-50", 25_557_032)])
def test_imagenet_resnets(name, count):
    m = create_model(name)
    assert n_params(m) == count
    assert forward(create_model(name, (3, 64, 64), 10), (3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name,count", [
    ("lenet-300-100", 266_610),
    ("lenet-5", 61_706),
    ("mnist1d-mlp", 276_010),
    ("mnist1d-cnn", 5_210),
    ("conv-2", 4_301_642),
    ("resnet-20", 272_474),
    ("resnet-56", 855_770),
])
def test_param_counts(name, count):
    assert n_params(create_model(name, num_classes=10)) == count


def test_resnet20_count_by_hand():
    # stem conv + 9 blocks of two 3x3 convs (+ 2 1x1 shortcuts), BN affine, fc 64->10
    conv = 3 * 16 * 9 + 3 * 2 * 16 * 16 * 9 + (16 * 32 * 9 + 32 * 32 * 9 + 2 * 2 * 32 * 32 * 9) \
        + (32 * 64 * 9 + 64 * 64 * 9 + 2 * 2 * 64 * 64 * 9) + 16 * 32 + 32 * 64
    bn = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64 + 32 + 64)
    assert n_params(create_model("resnet-20")) == conv + bn + 64 * 10 + 10 == 272_474


def test_unknown_name():
    with pytest.raises(JackpotError, match="valid models:.*lenet-300-100"):
        create_model("resnet-1000")


@pytest.mark.parametrize("name,shape", [
    ("lenet-5", (40,)),
    ("resnet-20", (40,)),
    ("conv-4", (784,)),
    ("mnist1d-cnn", (3, 32, 32)),
    ("lenet-5", (1, 8, 8)),     # too small for the pooling stack
    ("vgg-16", (3, 8, 8)),
    ("lenet-300-100", (0, 5)),
])
def test_bad_input_shape(name, shape):
    with pytest.raises(JackpotError, match=name):
        create_model(name, shape)


@pytest.mark.parametrize("classes", [0, -3, 2.5])
def test_bad_num_classes(classes):
    with pytest.raises(JackpotError):
        create_model("lenet-300-100", num_classes=classes)


@pytest.mark.parametrize("name,first,last", [
    ("lenet-300-100", "fc1", "fc3"),
    ("mnist1d-mlp", "linear1", "linear3"),
    ("mnist1d-cnn", "features.0", "linear"),
    ("lenet-5", "features.0", "classifier.4"),
    ("vgg-16", "features.0", "fc"),
    ("resnet-20", "conv", "fc"),
    ("wrn-22-2", "conv", "fc"),
    ("resnet-18", "conv1", "fc"),
])
def test_layer_names(name, first, last):
    m = create_model(name)
    assert first_layer_name(m) == first
    assert output_layer_name(m) == last
    assert isinstance(m.get_submodule(last), nn.Linear)


@pytest.mark.parametrize("name", SMALL)
def test_layer_conventions(name):
    """Output layer maps to classes; first layer consumes the input; shortcuts follow their block's convs."""
    m = create_model(name, num_classes=7)
    assert m.get_submodule(output_layer_name(m)).out_features == 7
    first = m.get_submodule(first_layer_name(m))
    shape = next(i for i in list_models() if i.name == name).default_input_shape
    if isinstance(first, nn.Linear):
        assert first.in_features == torch.Size(shape).numel()
    else:
        assert first.in_channels == (shape[0] if len(shape) > 1 else 1)
    names = [n for n, _ in m.named_modules()]
    for n in names:
        if n.endswith("shortcut.0") or n.endswith("shortcut"):
            block = n.rsplit(".shortcut", 1)[0]
            assert names.index(n) > names.index(block + ".conv2")


def test_same_seed_same_weights():
    for name in ("lenet-5", "resnet-20", "vgg-11", "wrn-22-2"):
        torch.manual_seed(0)
        a = create_model(name).state_dict()
        torch.manual_seed(0)
        b = create_model(name).state_dict()
        torch.manual_seed(1)
        c = create_model(name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)


def test_construction_leaves_bn_stats_and_train_mode():
    m = create_model("resnet-20")
    assert m.training
    bn = m.get_submodule("bn")
    assert torch.equal(bn.running_mean, torch.zeros(16)) and int(bn.num_batches_tracked) == 0


# --- width scaling (small-dense baseline) ---

from jackpot.models import width_for_params  # noqa: E402


@pytest.mark.parametrize("name,count", [
    ("lenet-300-100", 266_610),
    ("lenet-5", 61_706),
    ("mnist1d-mlp", 276_010),
    ("mnist1d-cnn", 5_210),
    ("conv-2", 4_301_642),
    ("resnet-20", 272_474),
    ("resnet-56", 855_770),
])
def test_width_one_keeps_param_counts(name, count):
    assert n_params(create_model(name, num_classes=10, width=1.0)) == count


@pytest.mark.parametrize("name", ["lenet-5", "resnet-20", "vgg-11", "wrn-22-2", "mnist1d-cnn"])
def test_width_one_bit_identical(name):
    torch.manual_seed(0)
    a = create_model(name).state_dict()
    torch.manual_seed(0)
    b = create_model(name, width=1.0).state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lenet_300_100_half_width():
    m = create_model("lenet-300-100", width=0.5)
    assert (m.fc1.out_features, m.fc2.out_features, m.fc3.out_features) == (150, 50, 10)
    assert m.fc1.in_features == 784
    assert n_params(m) == 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10


@pytest.mark.parametrize("name", SMALL)
def test_half_width_smaller_and_forwards(name):
    info = next(i for i in list_models() if i.name == name)
    m = create_model(name, width=0.5)
    assert n_params(m) < n_params(create_model(name))
    assert forward(m, info.default_input_shape).shape == (2, info.default_num_classes)
    assert m.get_submodule(output_layer_name(m)).out_features == info.default_num_classes


def test_resnet20_half_width_forwards():
    m = create_model("resnet-20", width=0.5)
    assert m.get_submodule("conv").out_channels == 8
    assert m.get_submodule("fc").in_features == 32
    assert forward(m, (3, 32, 32)).shape == (2, 10)


def test_tiny_width_keeps_at_least_one_channel():
    m = create_model("lenet-5", width=1 / 64)
    assert m.features[0].out_channels == 1
    assert forward(m, (1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), float("inf"), "wide", True])
def test_bad_width(width):
    with pytest.raises(JackpotError, match="width") as e:
        create_model("lenet-300-100", width=width)
    assert "\n" not in str(e.value)


def test_width_for_params_lenet_10_percent():
    target = 266_610 // 10
    state = torch.random.get_rng_state()
    w = width_for_params("lenet-300-100", (1, 28, 28), 10, target)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert 0 < w < 1
    got = n_params(create_model("lenet-300-100", (1, 28, 28), 10, width=w))
    assert abs(got - target) <= 0.02 * target


def test_width_for_params_full_and_defaults():
    assert width_for_params("resnet-20", None, None, 272_474) == 1.0
    w = width_for_params("resnet-20", None, None, 272_474 // 4)
    assert n_params(create_model("resnet-20", width=w)) < 272_474


@pytest.mark.parametrize("target", [10, 266_611, 10**9])
def test_width_for_params_impossible(target):
    with pytest.raises(JackpotError, match="lenet-300-100") as e:
        width_for_params("lenet-300-100", (1, 28, 28), 10, target)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("target", [0, -5, 2.5])
def test_width_for_params_bad_target(target):
    with pytest.raises(JackpotError):
        width_for_params("lenet-300-100", (1, 28, 28), 10, target)
