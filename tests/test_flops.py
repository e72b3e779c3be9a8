"""FLOPs and size accounting (jackpot.flops) against hand counts and the RigL paper's numbers."""
import pytest
import torch
from torch import nn

from jackpot.errors import JackpotError
from jackpot.flops import METHODS, inference_flops, layer_flops, model_size_bits, training_flops
from jackpot.models import create_model
from jackpot.sparse import Masks


@pytest.fixture(scope="module")
def resnet50_rows():
    torch.manual_seed(0)
    return layer_flops(create_model("resnet-50"), (3, 224, 224))


def test_resnet50_dense_inference_matches_paper(resnet50_rows):
    dense = sum(r["dense"] for r in resnet50_rows)
    assert len(resnet50_rows) == 54  # 53 convs + fc
    assert dense == pytest.approx(8.2e9, rel=0.02)  # RigL: dense ResNet-50 = 8.2e9 FLOPs


def test_resnet50_dense_training_matches_paper(resnet50_rows):
    f_d = sum(r["dense"] for r in resnet50_rows)
    assert training_flops("dense", f_d, f_d, 32000, 4096) == pytest.approx(3.2e18, rel=0.02)


def test_pruning_schedule_reproduces_rigl_colab(resnet50_rows):
    # RigL's colab: uniform 80% (conv1 dense), cubic pruning from step 10k to 25k, sampled every 1k of 32k
    # steps; the paper's table gives Pruning training FLOPs 0.56x at S=0.8.
    f_d = sum(r["dense"] for r in resnet50_rows)

    def sparsity(t):
        return 0.0 if t < 10000 else 0.8 if t > 25000 else (1 - (1 - (t - 10000) / 15000) ** 3) * 0.8

    def f(t):
        s = sparsity(t * 1000)
        return sum(r["dense"] * (1 if r["name"] == "conv1" else 1 - s) for r in resnet50_rows)

    pruned = training_flops("pruning", f_d, 0, 33, 1, density_schedule=f)
    ratio = pruned / training_flops("dense", f_d, 0, 33, 1)
    assert ratio == pytest.approx(0.56, abs=0.005)


def test_snfs_and_rigl_ratios_match_paper_table():
    # Table (ERK, S=0.8): test FLOPs 0.42x -> SNFS trains at 0.61x, RigL at 0.42x (delta_t=100).
    f_d, f_s = 1.0, 0.42
    dense = training_flops("dense", f_d, f_s, 10, 1)
    assert training_flops("snfs", f_d, f_s, 10, 1) / dense == pytest.approx(0.61, abs=0.005)
    assert training_flops("rigl", f_d, f_s, 10, 1) / dense == pytest.approx(0.42, abs=0.005)


def test_training_formulas_by_hand():
    fd, fs, steps, b = 10.0, 2.0, 7, 3
    assert training_flops("dense", fd, fs, steps, b) == 3 * 10 * 7 * 3
    for m in ("static", "snip", "set", "small-dense"):
        assert training_flops(m, fd, fs, steps, b) == 3 * 2 * 7 * 3
    assert training_flops("snfs", fd, fs, steps, b) == (2 * 2 + 10) * 7 * 3
    # delta_t=4: (3*2*4 + 2*2 + 10) / 5 = 38/5 per example and step
    assert training_flops("rigl", fd, fs, steps, b, delta_t=4) == pytest.approx(38 / 5 * 7 * 3)
    sched = [10.0, 10.0, 6.0, 2.0]
    assert training_flops("gmp", fd, fs, 4, b, density_schedule=sched) == 3 * 28 * 3
    assert training_flops("imp", fd, fs, 4, b, density_schedule=lambda t: sched[t]) == 3 * 28 * 3


def test_training_flops_bad_input():
    with pytest.raises(JackpotError, match="valid: .*rigl"):
        training_flops("lottery", 1, 1, 1, 1)
    with pytest.raises(JackpotError, match="density_schedule"):
        training_flops("pruning", 1, 1, 1, 1)
    with pytest.raises(JackpotError, match="2 values for 3 steps"):
        training_flops("pruning", 1, 1, 3, 1, density_schedule=[1, 1])
    assert set(METHODS) >= {"dense", "static", "set", "snfs", "rigl", "pruning", "small-dense"}


def test_lenet_300_100_by_hand_dense_and_masked():
    model = create_model("lenet-300-100")
    dense = 2 * (784 * 300 + 300 * 100 + 100 * 10)
    assert inference_flops(model, (1, 28, 28)) == {"dense": dense, "sparse": dense, "ratio": 1.0}
    masks = Masks.ones_for(model, ["fc1.weight"])
    masks["fc1.weight"].view(-1)[: 784 * 150] = False  # half of fc1 pruned
    out = inference_flops(model, (1, 28, 28), masks)
    assert out["sparse"] == 2 * (784 * 150 + 300 * 100 + 100 * 10)
    assert out["dense"] == dense
    rows = {r["name"]: r for r in layer_flops(model, (1, 28, 28), masks)}
    assert rows["fc1"]["nnz"] == 784 * 150 and rows["fc2"]["nnz"] == 300 * 100


def test_conv2d_stride_and_padding_set_output_size():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=1, padding=1),  # 10x10 -> 10x10
        nn.Conv2d(8, 4, 3, stride=2, padding=0),  # 10x10 -> 4x4
        nn.Flatten(), nn.Linear(64, 5))
    rows = layer_flops(model, (3, 10, 10))
    assert [r["positions"] for r in rows] == [100, 16, 1]
    assert [r["dense"] for r in rows] == [2 * 8 * 3 * 9 * 100, 2 * 4 * 8 * 9 * 16, 2 * 64 * 5]
    assert [r["kind"] for r in rows] == ["Conv2d", "Conv2d", "Linear"]


def test_conv1d_mnist1d_cnn_by_hand():
    model = create_model("mnist1d-cnn")  # L: 40 -> 19 -> 10 -> 5 (k 5/3/3, stride 2, pad 1)
    rows = layer_flops(model, (40,))
    assert [r["positions"] for r in rows] == [19, 10, 5, 1]
    expected = 2 * (25 * 1 * 5 * 19 + 25 * 25 * 3 * 10 + 25 * 25 * 3 * 5 + 125 * 10)
    assert inference_flops(model, (40,))["dense"] == expected


def test_masked_conv_counts_nnz_and_state_is_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    model.train()
    model[3].eval()  # a mixed per-module mode must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = Masks({"0.weight": torch.rand(4, 2, 3, 3) < 0.3})
    out = inference_flops(model, (2, 6, 6), masks)
    assert out["dense"] == 2 * 72 * 36
    assert out["sparse"] == 2 * int(masks["0.weight"].sum()) * 36
    assert out["ratio"] == out["sparse"] / out["dense"]
    assert model.training and not model[3].training and model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bad_mask_and_bad_input_shape_are_one_line_errors():
    model = create_model("lenet-300-100")
    with pytest.raises(JackpotError, match="shape"):
        inference_flops(model, (1, 28, 28), {"fc1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(JackpotError, match="forward pass on input shape") as err:
        inference_flops(model, (1, 5, 5))
    assert "\n" not in str(err.value)


def test_model_size_bits_by_hand():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))  # 12 + 3 + 6 params
    dense = model_size_bits(model)
    assert dense == {"params": 21, "nnz": 21, "dense": 21 * 32, "sparse": 21 * 32, "ratio": 1.0}
    masks = Masks.ones_for(model, ["0.weight", "1.weight"])
    masks["0.weight"][0] = False  # 4 of 12 pruned; 1.weight fully kept -> no mask bits
    out = model_size_bits(model, masks)
    assert out["nnz"] == 17
    assert out["sparse"] == (8 * 32 + 12) + 3 * 32 + 6 * 32
    with pytest.raises(JackpotError, match="does not have"):
        model_size_bits(model, {"2.weight": torch.ones(1, dtype=torch.bool)})
