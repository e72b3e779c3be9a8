"""Export (every zoo model), SparseLinear gradients and mask updates, compact save/load."""
import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jackpot.errors import JackpotError
from jackpot.export import SparseLinear, export_model, load_exported, save_exported, summary
from jackpot.models import create_model, model_names
from jackpot.models.registry import _REGISTRY
from jackpot.sparse.masks import Masks
from jackpot.sparse.prunable import prunable_names
from jackpot.sparse.pruning import prune

SMALL = {"resnet-18": (3, 64, 64), "resnet-50": (3, 64, 64)}  # ImageNet nets at 64x64: fast


def random_masks(model, fraction=0.9, seed=1):
    masks = Masks.ones_for(model, prunable_names(model))
    g = torch.Generator().manual_seed(seed)
    return prune({n: torch.rand(m.shape, generator=g) for n, m in masks.items()}, masks, fraction)


def masked_copy(model, masks):
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return ref


@pytest.mark.parametrize("name", model_names())
def test_export_matches_masked_model_for_every_zoo_model(name):
    torch.manual_seed(0)
    shape = SMALL.get(name, _REGISTRY[name].info.default_input_shape)
    model = create_model(name, shape).eval()
    masks = random_masks(model)
    ref = masked_copy(model, masks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # csr forced: every masked Linear runs a real sparse kernel; convs are baked dense.
    ex = export_model(model, masks, 2, formats=("csr",), measure=False)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(ex(x), ref(x), atol=1e-5, rtol=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # original untouched
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and f"{n}.weight" in masks]
    assert {r["name"] for r in summary(ex) if r["format"] == "csr"} == set(linears)


@pytest.mark.parametrize("fmt", ["dense", "csr", "rows", "bsr"])
@pytest.mark.parametrize("batch", [1, 5])
def test_each_linear_format_is_exact(fmt, batch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    blocks = torch.rand(16, 8) > 0.6  # 4x4 blocks, and some rows/cols empty for "rows"
    blocks[:, 0] = False
    m0 = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)
    masks = Masks({"0.weight": m0, "2.weight": torch.rand(16, 64) > 0.5})
    ex = export_model(model, masks, batch, formats=(fmt,), measure=False)
    want = {"dense": "dense", "csr": "csr", "rows": "rows", "bsr": "bsr4"}[fmt]
    assert summary(ex)[0]["format"] == want
    x = torch.randn(batch, 32)
    with torch.no_grad():
        torch.testing.assert_close(ex(x), masked_copy(model, masks)(x), atol=1e-5, rtol=0)


def test_measured_export_records_times_and_summary():
    torch.manual_seed(0)
    model = create_model("lenet-300-100")
    masks = random_masks(model, 0.98)
    ex = export_model(model, masks, 1, rounds=2)
    rows = summary(ex)
    assert [r["name"] for r in rows] == ["fc1", "fc2", "fc3"]
    for r in rows:
        assert {"dense", "csr"} <= set(r["times"]) and r["speedup"] > 0
        assert r["nnz"] == int(masks[f"{r['name']}.weight"].sum())
        assert r["times"][r["format"]] == min(r["times"].values())
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ex(x), masked_copy(model, masks)(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch", [0, -1, 2.0])
def test_bad_batch_size_is_one_clear_error(batch):
    model = create_model("lenet-300-100")
    with pytest.raises(JackpotError, match="batch size"):
        export_model(model, random_masks(model), batch)


def test_no_masks_is_an_error():
    with pytest.raises(JackpotError, match="nothing to export"):
        export_model(create_model("lenet-300-100"), Masks(), 1)


def test_unsupported_masked_layer_falls_back_to_dense_with_notice(caplog):
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(16, 4))
    masks = Masks({"0.weight": torch.rand(10, 8) > 0.5, "2.weight": torch.rand(4, 16) > 0.5})
    with caplog.at_level(logging.WARNING, logger="jackpot.export"):
        ex = export_model(model, masks, 2, measure=False)
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "Embedding" in notices[0] and "dense" in notices[0]
    x = torch.randint(0, 10, (2, 2))
    with torch.no_grad():
        torch.testing.assert_close(ex(x), masked_copy(model, masks)(x), atol=1e-5, rtol=0)
    assert summary(ex)[0]["note"] == "unsupported layer type"


def test_save_load_round_trip_is_identical_and_compact(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet-300-100")
    masks = random_masks(model, 0.95)
    arch = {"name": "lenet-300-100", "input_shape": (1, 28, 28), "num_classes": 10}
    ex = export_model(model, masks, 4, measure=False, arch=arch)
    size = save_exported(ex, tmp_path / "m.pt")
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    assert size < 0.15 * (tmp_path / "dense.pt").stat().st_size  # ~8 bytes per kept weight
    assert isinstance(torch.load(tmp_path / "m.pt", weights_only=True), dict)
    loaded = load_exported(tmp_path / "m.pt")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), ex(x))
    assert [r["format"] for r in summary(loaded)] == [r["format"] for r in summary(ex)]


def test_save_needs_arch(tmp_path):
    model = create_model("lenet-300-100")
    ex = export_model(model, random_masks(model), 1, measure=False)
    with pytest.raises(JackpotError, match="arch"):
        save_exported(ex, tmp_path / "m.pt")


# --- SparseLinear ---------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_masked_dense_autograd(batch, bias):
    torch.manual_seed(0)
    lin = nn.Linear(40, 24, bias=bias)
    mask = torch.rand(24, 40) > 0.8
    mask[3] = False  # an empty row and column must work too
    mask[:, 5] = False
    layer = SparseLinear.from_dense(lin, mask)
    x = torch.randn(batch, 40, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    w = lin.weight.detach().clone().requires_grad_()
    b = None if lin.bias is None else lin.bias.detach().clone().requires_grad_()
    y, y2 = layer(x), F.linear(x2, w * mask, b)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=0)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.values.grad, w.grad[mask], atol=1e-5, rtol=0)
    if bias:
        torch.testing.assert_close(layer.bias.grad, b.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.to_dense().weight, lin.weight * mask)
    assert torch.equal(layer.mask, mask)


def test_sparse_linear_trains_like_masked_dense():
    torch.manual_seed(0)
    lin = nn.Linear(20, 10)
    mask = torch.rand(10, 20) > 0.7
    layer = SparseLinear.from_dense(lin, mask)
    ref = nn.Linear(20, 10)
    ref.load_state_dict({"weight": lin.weight * mask, "bias": lin.bias})
    opt, opt_ref = torch.optim.SGD(layer.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(8, 3, 20)  # extra leading dims, like nn.Linear
        for o, f in ((opt, layer), (opt_ref, ref)):
            o.zero_grad()
            f(x).square().mean().backward()
            o.step()
        with torch.no_grad():
            ref.weight.mul_(mask)
    torch.testing.assert_close(layer.dense_weight(), ref.weight, atol=1e-5, rtol=0)


def test_rigl_update_keeps_counts_and_values():
    torch.manual_seed(0)
    layer = SparseLinear.from_dense(nn.Linear(30, 20), torch.rand(20, 30) > 0.8)
    old_w, old_mask, k = layer.dense_weight(), layer.mask, 7
    n = int(old_mask.sum())
    # RigL: drop the k smallest active |w|, grow k inactive positions (largest |dense grad|).
    score = torch.where(old_mask, old_w.abs(), torch.tensor(float("inf")))
    drop = torch.topk(score.flatten(), k, largest=False).indices
    grow_score = torch.where(old_mask, torch.tensor(-1.0), torch.rand(20, 30))
    grow = torch.topk(grow_score.flatten(), k).indices
    new_mask = old_mask.clone().flatten()
    new_mask[drop], new_mask[grow] = False, True
    new_mask = new_mask.view(20, 30)
    param = layer.values
    src, dst = layer.update_mask(new_mask)
    assert layer.values is param and layer.values.numel() == n == int(new_mask.sum())
    assert torch.equal(layer.mask, new_mask) and src.numel() == n - k
    w = layer.dense_weight()
    kept = old_mask & new_mask
    assert torch.equal(w[kept], old_w[kept])
    assert bool((w[new_mask & ~old_mask] == 0).all())
    # the layer still computes correctly with the new structure
    x = torch.randn(3, 30)
    torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias), atol=1e-5, rtol=0)


def test_export_accepts_sparse_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(SparseLinear.from_dense(nn.Linear(12, 8), torch.rand(8, 12) > 0.5), nn.ReLU())
    ex = export_model(model, None, 3, measure=False)
    x = torch.randn(3, 12)
    with torch.no_grad():
        torch.testing.assert_close(ex(x), model(x), atol=1e-5, rtol=0)


def _run_dir(store, tiny_npz):
    from jackpot.cli import main
    assert main(["pai", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "80",
                 "--duration", "1ep", "--score", "magnitude", "--density", "0.2", "--device", "cpu",
                 "--threads", "1"]) == 0
    return next(p for p in store.iterdir() if p.name.startswith("pai-"))


def test_export_and_bench_take_a_device_and_hand_the_model_over_on_it(tiny_npz, store, capsys, monkeypatch):
    from jackpot.cli import export as cli_export
    from jackpot.cli import main
    run = _run_dir(store, tiny_npz)
    out = store / "m.pt"
    assert main(["export", run.name, "-o", str(out), "--device", "cpu"]) == 0
    ticket = load_exported(out)
    assert ticket(torch.randn(3, 20)).shape == (3, 4)
    capsys.readouterr()
    assert main(["bench", "--model", "lenet-300-100", "--density", "0.2", "--rounds", "1", "--json",
                 "--device", "cpu"]) == 0
    assert '"device": "cpu"' in capsys.readouterr().out
    # the resolved device is where the library receives the model (meta stands in for a GPU)
    seen = []
    monkeypatch.setattr(cli_export, "resolve_device", lambda name: seen.append(name) or "meta")
    monkeypatch.setattr(cli_export, "export_model", lambda model, *a, **k: seen.append(
        {p.device.type for p in model.parameters()}) or model)
    monkeypatch.setattr(cli_export, "save_exported", lambda *a: 1)
    monkeypatch.setattr(cli_export, "summary", lambda exported: [])
    monkeypatch.setattr(cli_export, "benchmark", lambda model, *a: seen.append(
        {p.device.type for p in model.parameters()}) or {})
    monkeypatch.setattr(cli_export, "format_benchmark", lambda r: "")
    assert main(["export", run.name, "-o", str(out), "--device", "cuda:1", "--force"]) == 0
    assert main(["bench", "--model", "lenet-300-100", "--density", "0.2", "--device", "cuda"]) == 0
    assert main(["bench", run.name]) == 0
    assert seen == ["cuda:1", {"meta"}, "cuda", {"meta"}, "cpu", {"meta"}]  # cpu by default


@pytest.mark.parametrize("command", ["export", "bench"])
def test_export_and_bench_refuse_cuda_without_one_in_one_line(store, capsys, monkeypatch, command):
    from jackpot.cli import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU-only machine
    args = (["export", "RUN", "-o", str(store / "m.pt")] if command == "export"
            else ["bench", "--model", "lenet-300-100", "--density", "0.2"])
    store.mkdir(parents=True, exist_ok=True)
    assert main(args + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "jackpot: error: --device cuda: CUDA is not available on this machine\n"
    assert not (store / "m.pt").exists()
