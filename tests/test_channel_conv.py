"""Channel removal (issue 12, convolutions): a conv whose mask empties whole channels runs as the
smaller dense conv over the rest, in training (--execution sparse) and in export, with the
masked conv's outputs and gradients; unstructured conv masks stay masked dense and say so."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jackpot.cli import main
from jackpot.config import TrainConfig
from jackpot.data.dataset import Dataset
from jackpot.export import export_model, load_exported, save_exported, summary
from jackpot.models import create_model, registry
from jackpot.sparse import Masks, channel_conv, execution, keep_count
from jackpot.sparse.dst import UpdateSchedule, make_method
from jackpot.sparse.execution import choose_layers
from jackpot.train.loop import Stage, train_stage
from jackpot.train.optim import build_optimizer


def _half_channel_mask(shape, g, out_kept=None, in_kept=None):
    """Random 50% mask with the given output / input channels emptied."""
    m = torch.rand(shape, generator=g) < 0.5
    if out_kept is not None:
        m &= out_kept.view(-1, *[1] * (len(shape) - 1))
    if in_kept is not None:
        m &= in_kept.view(1, -1, *[1] * (len(shape) - 2))
    return m


@pytest.mark.parametrize("conv_cls, x_shape", [(nn.Conv1d, (4, 6, 20)), (nn.Conv2d, (4, 6, 9, 9)),
                                               (nn.Conv3d, (2, 6, 5, 5, 5))])
@pytest.mark.parametrize("bias", [True, False])
def test_channel_removed_conv_equals_the_masked_conv(conv_cls, x_shape, bias):
    torch.manual_seed(0)
    conv = conv_cls(6, 8, 3, padding=1, stride=2, bias=bias)
    g = torch.Generator().manual_seed(0)
    out_kept, in_kept = torch.ones(8, dtype=torch.bool), torch.ones(6, dtype=torch.bool)
    out_kept[[1, 4, 5]] = False
    in_kept[[0, 3]] = False
    mask = _half_channel_mask(conv.weight.shape, g, out_kept, in_kept)
    with torch.no_grad():
        conv.weight.mul_(mask)
    ref = copy.deepcopy(conv)
    assert channel_conv.removable(conv, mask)
    kept_out, kept_in = channel_conv.kept_channels(mask)
    assert kept_out.tolist() == [0, 2, 3, 6, 7] and kept_in.tolist() == [1, 2, 4, 5]

    x = torch.randn(x_shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    channel_conv.enable(conv, mask)
    y, y_ref = conv(x), ref(x_ref)
    assert torch.allclose(y, y_ref, atol=1e-6)
    if bias:  # a removed output channel is its bias everywhere
        assert torch.equal(y[:, 1], torch.full_like(y[:, 1], float(ref.bias[1].detach())))
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    assert torch.allclose(conv.weight.grad * mask, ref.weight.grad * mask, atol=1e-5)
    removed = ~out_kept.view(-1, 1, *[1] * (mask.dim() - 2)) | ~in_kept.view(1, -1, *[1] * (mask.dim() - 2))
    assert float(conv.weight.grad[removed.expand_as(mask)].abs().max()) == 0.0  # removed channels: no product
    if bias:
        assert torch.allclose(conv.bias.grad, ref.bias.grad, atol=1e-5)

    conv.whole = True  # a dense-gradient step: the whole conv, the gradient at every position
    conv.weight.grad = None
    conv(x).backward(grad)
    assert torch.allclose(conv.weight.grad, ref.weight.grad, atol=1e-5)
    conv.whole = False

    exported = channel_conv.ExportedChannelConv(ref, mask)
    assert tuple(exported.inner.weight.shape[:2]) == (5, 4)  # really the smaller conv
    assert torch.allclose(exported(x_ref.detach()), y_ref.detach(), atol=1e-6)
    assert torch.equal(exported.dense_weight(), ref.weight.detach() * mask)

    empty = torch.zeros_like(mask)  # nothing kept (a collapse): the bias (or 0), zero gradients, not None
    channel_conv.enable(conv, empty)
    with torch.no_grad():
        ref.weight.zero_()
        conv.weight.zero_()
    x.grad = conv.weight.grad = None
    y = conv(x)
    assert torch.allclose(y, ref(x_ref), atol=1e-6)
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().max()) == 0.0 and conv.weight.grad is not None
    assert torch.allclose(channel_conv.ExportedChannelConv(ref, empty)(x_ref), ref(x_ref), atol=1e-6)

    channel_conv.disable(conv)
    assert type(conv) is conv_cls and [n for n, _ in conv.named_parameters()] == (
        ["weight", "bias"] if bias else ["weight"])


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(16 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.features(x))


def _convnet_and_masks():
    """Half the output channels of each conv empty (and the next conv's matching inputs)."""
    torch.manual_seed(2)
    model = SmallConvNet()
    g = torch.Generator().manual_seed(4)
    kept0 = torch.zeros(8, dtype=torch.bool)
    kept0[torch.randperm(8, generator=g)[:4]] = True
    kept2 = torch.zeros(16, dtype=torch.bool)
    kept2[torch.randperm(16, generator=g)[:8]] = True
    masks = Masks({"features.0.weight": _half_channel_mask((8, 3, 3, 3), g, kept0),
                   "features.2.weight": _half_channel_mask((16, 8, 3, 3), g, kept2, kept0),
                   "head.weight": torch.rand(3, 256, generator=g) < 0.5})
    return model, masks


def _images():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (120,), generator=g)
    x = torch.randn(3, 3, 8, 8, generator=g)[y] + 0.5 * torch.randn(120, 3, 8, 8, generator=g)
    return Dataset("img", x, y, x[:30], y[:30], 3)


def _forced_channels(monkeypatch):
    """The per-layer choice without timing: channel removal wins for convs, Linear stays masked."""
    monkeypatch.setattr(execution, "measure_conv", lambda *a, **k: {"masked": 1.0, "channels": 0.5})
    monkeypatch.setattr(execution, "measure_layer", lambda *a, **k: {"masked": 1.0, "sparse": 2.0})


@pytest.mark.parametrize("method", ["rigl", "set", "snfs", "dsr", "static"])
def test_masked_and_channel_removed_training_make_the_same_updates_and_weights(tmp_path, monkeypatch, method):
    _forced_channels(monkeypatch)
    runs = {}
    for mode in ("masked", "sparse"):
        model, masks = _convnet_and_masks()
        cb = make_method(method, UpdateSchedule(delta_t=10, alpha=0.3, t_end=70), seed=0)
        log, real = [], cb.update

        def logged(step, m, sparsifier, real=real, log=log, model=model):
            out = real(step, m, sparsifier)
            log.append(({n: v.clone() for n, v in sparsifier.masks.items()}, type(model.features[2]).__name__))
            return out
        cb.update = logged
        train = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, execution=mode)
        d = tmp_path / mode
        record = train_stage(Stage(dir=d, model=model, dataset=_images(), train=train, batch_size=12, order_seed=1,
                                   start=0, end=80, masks=masks, callbacks=[cb]))
        runs[mode] = (torch.load(d / "final.pt", weights_only=True), log, record, model)
    (dense, dense_log, dense_record, _), (sparse, sparse_log, sparse_record, model) = runs["masked"], runs["sparse"]
    assert len(dense_log) == len(sparse_log) == (0 if method == "static" else 6)
    for (a, cls_a), (b, cls_b) in zip(dense_log, sparse_log):
        assert (cls_a, cls_b) == ("Conv2d", "ChannelConv2d")  # the update ran with the channels removed
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert max(float((dense[k] - sparse[k]).abs().max()) for k in dense) < 1e-5
    assert sparse_record["execution"]["channels"] == ["features.0.weight", "features.2.weight"]
    assert sparse_record["execution"]["layers"]["features.2.weight"]["channels"] == {"out": [8, 16], "in": [4, 8]}
    assert sparse_record["execution"]["masked"] == ["head.weight"]
    assert type(model.features[2]) is nn.Conv2d  # the caller's model is the plain conv again


def test_unstructured_and_grouped_conv_masks_stay_masked_dense_and_say_why():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2))
    g = torch.Generator().manual_seed(0)
    masks = Masks({"0.weight": torch.rand(8, 4, 3, 3, generator=g) < 0.9,
                   "2.weight": torch.zeros(8, 4, 3, 3, dtype=torch.bool)})
    masks["0.weight"][:, :, 1, 1] = True  # every channel keeps a weight: nothing to remove
    plan = choose_layers(model, masks, torch.randn(2, 4, 9, 9), lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert plan["0.weight"]["execution"] == "masked" and "unstructured" in plan["0.weight"]["reason"]
    assert plan["2.weight"]["execution"] == "masked" and "grouped" in plan["2.weight"]["reason"]


def test_choose_layers_times_a_channel_pruned_conv_at_the_input_it_sees():
    model, masks = _convnet_and_masks()
    plan = choose_layers(model, masks, _images().x_train[:12], lambda ps: build_optimizer(ps, TrainConfig()))
    entry = plan["features.2.weight"]
    assert entry["input_shape"] == [12, 8, 8, 8] and set(entry["seconds"]) == {"masked", "channels"}
    assert entry["execution"] == ("channels" if entry["seconds"]["channels"] < entry["seconds"]["masked"] else "masked")


def test_export_removes_empty_channels_and_the_file_round_trips(tmp_path, monkeypatch):
    model, masks = _convnet_and_masks()
    masks.apply_to(model)
    model.eval()
    x = _images().x_test[:5]
    with torch.no_grad():
        expected = model(x)
    exported = export_model(model, masks, 5, measure=False)  # the guess: channels when half or fewer are kept
    assert isinstance(exported.features[2], channel_conv.ExportedChannelConv)
    with torch.no_grad():
        assert torch.allclose(exported(x), expected, atol=1e-5)
    rows = {r["name"]: r for r in summary(exported)}
    assert rows["features.2"]["format"] == "channels"
    assert rows["features.2"]["note"] == "8 of 16 output channels empty, 4 of 8 input channels empty"
    assert rows["features.2"]["stored_bytes"] < rows["features.2"]["dense_bytes"] / 3  # a quarter of the filter bank
    timed = export_model(model, masks, 5, input_shape=(3, 8, 8), rounds=3)  # measured at the real input
    assert set(timed.features[2].export_info["times"]) == {"dense", "channels"}
    path = tmp_path / "m.pt"
    # the zoo rebuilds the architecture by name: this net, registered for this test only
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("test-small-convnet", description="test only", input_shape=(3, 8, 8), num_classes=3,
                      family="conv")(lambda input_shape, num_classes, width=1.0: SmallConvNet())
    save_exported(exported, path, arch={"name": "test-small-convnet", "input_shape": (3, 8, 8), "num_classes": 3})
    back = load_exported(path)
    assert isinstance(back.features[2], channel_conv.ExportedChannelConv)
    with torch.no_grad():
        assert torch.allclose(back(x), expected, atol=1e-5)
    plain = export_model(model, masks, 5, measure=False, formats=("dense",))
    assert isinstance(plain.features[2], nn.Conv2d)  # channels not asked for: baked dense
    with torch.no_grad():
        assert torch.allclose(F.softmax(plain(x), 1), F.softmax(expected, 1), atol=1e-5)


def _image_npz(path):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (120,), generator=g)
    x = torch.randn(4, 3, 8, 8, generator=g)[y] + 0.5 * torch.randn(120, 3, 8, 8, generator=g)
    np.savez(path, x_train=x[:96].numpy(), y_train=y[:96].numpy(), x_test=x[96:].numpy(), y_test=y[96:].numpy())
    return path


def test_pai_channel_structure_keeps_whole_channels_and_sparse_execution_removes_them(tmp_path, store, monkeypatch,
                                                                                    capsys):
    """`jackpot pai --structure channel`: each conv keeps round(density x channels) whole output
    channels by summed score, linear layers their exact unstructured count; `--execution sparse`
    runs those convs channel-removed, with the masked run's weights; export removes them too."""
    _forced_channels(monkeypatch)
    npz = _image_npz(tmp_path / "img.npz")
    args = ["pai", "--dataset", f"npz:{npz}", "--model", "conv-2", "--score", "magnitude", "--budget", "uniform",
            "--density", "0.5", "--structure", "channel", "--duration", "2ep", "--batch-size", "32"]
    paths = {}
    for mode in ("masked", "sparse"):
        assert main(args + ["--execution", mode]) == 0
        paths[mode] = max(store.rglob("summary.json"), key=lambda p: p.stat().st_mtime).parent
    assert paths["masked"] != paths["sparse"]
    run = paths["sparse"]
    masks = Masks.load(run / "mask.pt")
    for name in ("features.0.weight", "features.2.weight"):
        per_channel = masks[name].flatten(1)
        assert (per_channel.all(1) | ~per_channel.any(1)).all()  # every channel all kept or all pruned
        assert int(per_channel.all(1).sum()) == 32  # round(0.5 * 64)
    for name in ("classifier.0.weight", "classifier.2.weight", "classifier.4.weight"):
        assert int(masks[name].sum()) == keep_count(0.5, masks[name].numel())
    init = torch.load(run / "init.pt", weights_only=True)
    scores = init["features.2.weight"].abs().double().flatten(1).sum(1)  # magnitude: the channels of largest L1
    assert set(masks["features.2.weight"].flatten(1).all(1).nonzero().flatten().tolist()) == set(
        scores.argsort(descending=True)[:32].tolist())
    done = json.loads((run / "train/done.json").read_text())
    assert done["execution"]["channels"] == ["features.0.weight", "features.2.weight"]
    assert json.loads((run / "summary.json").read_text())["execution"] == done["execution"]
    a, b = (torch.load(paths[m] / "train/final.pt", weights_only=True) for m in ("masked", "sparse"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    budget = json.loads((run / "budget.json").read_text())
    assert {r["name"]: r["kept"] for r in budget["layers"]}["features.2.weight"] == 32 * 64 * 9
    model = create_model("conv-2", (3, 8, 8), 4)
    model.load_state_dict(b)
    exported = export_model(model, masks, 4, measure=False)
    assert {r["name"]: r["format"] for r in summary(exported)}["features.2"] == "channels"

    capsys.readouterr()
    before = sorted(store.rglob("*"))
    assert main(args[:-8] + ["--budget", "global", "--density", "0.5", "--structure", "channel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--structure channel needs a per-layer budget" in err[0]
    assert sorted(store.rglob("*")) == before  # refused before anything was written
    for extra in (["--dataset", "mnist1d", "--model", "mnist1d-mlp", "--budget", "uniform"],  # no conv at all
                  ["--dataset", f"npz:{npz}", "--model", "conv-2", "--budget", "uniform", "--density", "0.004"]):
        assert main(["pai", "--score", "magnitude", "--structure", "channel", "--duration", "1ep"] + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert ("no prunable conv layer" in err[0]) if "mnist1d" in extra else ("rounded to channels" in err[0])
    assert sorted(store.rglob("*")) == before


def test_a_collapsed_conv_trains_channel_removed_like_the_masked_one(tmp_path, monkeypatch):
    """--allow-collapse: a conv with nothing kept runs whole (its zero weights give the bias), so
    the layers before it get their (zero) gradients as in masked training, and the timing runs."""
    model, masks = _convnet_and_masks()
    masks["features.2.weight"] = torch.zeros_like(masks["features.2.weight"])
    seconds = execution.measure_conv(model.features[2], masks["features.2.weight"], (4, 8, 8, 8), True,
                                     lambda ps: torch.optim.SGD(ps, lr=0.1), rounds=1)
    assert set(seconds) == {"masked", "channels"}
    _forced_channels(monkeypatch)
    finals = {}
    for mode in ("masked", "sparse"):
        m, k = _convnet_and_masks()
        k["features.2.weight"] = torch.zeros_like(k["features.2.weight"])
        train = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, execution=mode)
        train_stage(Stage(dir=tmp_path / mode, model=m, dataset=_images(), train=train, batch_size=12, order_seed=1,
                          start=0, end=20, masks=k))
        finals[mode] = torch.load(tmp_path / mode / "final.pt", weights_only=True)
    assert max(float((finals["masked"][n] - finals["sparse"][n]).abs().max()) for n in finals["masked"]) < 1e-5


def test_channel_removed_conv_under_bf16_autocast_keeps_the_masked_convs_dtype_and_values():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    mask = torch.rand(conv.weight.shape) < 0.5
    mask[[1, 4]] = False
    with torch.no_grad():
        conv.weight.mul_(mask)
    ref = copy.deepcopy(conv)
    channel_conv.enable(conv, mask)
    x = torch.randn(4, 6, 9, 9).to(memory_format=torch.channels_last)
    assert torch.allclose(conv(x), ref(x), atol=1e-6)  # channels_last input, and output as the masked conv's
    assert ref(x).is_contiguous(memory_format=torch.channels_last)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)
    assert channel_conv.ExportedChannelConv(ref, mask)(x).is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = conv(x), ref(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    assert torch.allclose(got.float(), expected.float(), atol=0.05)
    assert torch.equal(got[:, 1], expected[:, 1])  # the removed channel: its bias, rounded alike
