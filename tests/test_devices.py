"""What a GPU would break, shown on the CPU (issue 14): tensors on the right device (the `meta`
device stands in for CUDA: it has shapes and devices but no data), dtypes kept (bf16), host syncs
counted, CUDA-only calls faked. Every numeric check here runs on the CPU."""
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.fx.experimental._config as fx_config
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from jackpot.config import DataConfig, ModelConfig, PaiConfig, RunConfig, TrainConfig
from jackpot.data import augment as augment_mod
from jackpot.data import augment_batch
from jackpot.export import SparseLinear, export_model
from jackpot.sparse import timing
from jackpot.export import exporter as exporter_mod
from jackpot.export.bench import benchmark, format_benchmark
from jackpot.procedures.context import RunContext
from jackpot.procedures.pai import pai_masks
from jackpot.sparse import Masks, Sparsifier, scores as scores_mod
from jackpot.sparse.dst import DropGrow, UpdateSchedule, make_method

META = torch.device("meta")


# --- a host-sync counter ----------------------------------------------------------------------------
# On CUDA these calls wait for the device: reading a value back (item, int(), bool(), tolist), and
# ops whose output size depends on the data (nonzero, boolean indexing, masked_select, ...). On the
# CPU they are ordinary calls, so they are counted where they are made, by file.

_SCALAR = {"__int__", "__float__", "__bool__", "__index__", "item", "tolist", "numpy"}
_SIZED_BY_DATA = {"nonzero", "masked_select", "unique", "unique_consecutive", "bincount", "argwhere"}
_TORCH_DIR = str(Path(torch.__file__).parent)


def _bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostSyncs(TorchFunctionMode):
    """Counts calls that would make the host wait for a GPU, keyed by the file that made them."""

    def __init__(self):
        super().__init__()
        self.where = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        sync = (name in _SCALAR or name in _SIZED_BY_DATA
                or (name in ("__getitem__", "__setitem__") and _bool_index(args[1]))
                or (name == "repeat_interleave" and isinstance(args[1] if len(args) > 1 else None, torch.Tensor)
                    and kwargs.get("output_size") is None))
        if sync:
            frame = sys._getframe(1)
            while frame and frame.f_code.co_filename.startswith(_TORCH_DIR):
                frame = frame.f_back
            self.where[Path(frame.f_code.co_filename).name if frame else "?"] += 1
        return func(*args, **kwargs)


def test_the_sync_counter_sees_what_syncs_on_a_gpu():
    t, m = torch.ones(4), torch.tensor([True, False, True, True])
    with HostSyncs() as s:
        int(t.sum()), bool(m.any()), t.tolist(), t[m], t.masked_fill_(m, 0.0), t.mul_(2)
    assert s.where == {"test_devices.py": 4}  # int, bool, tolist, t[m]; masked_fill_ and mul_ do not sync


# --- item 1: SparseLinear's index buffers live with the weight -------------------------------------

@pytest.fixture
def meta_nonzero(monkeypatch):
    """nonzero() on meta needs to be told its output size; with all-True masks 'all nonzero' is exact."""
    monkeypatch.setattr(fx_config, "meta_nonzero_assume_all_nonzero", True)


def _devices(module: nn.Module) -> dict[str, torch.device]:
    return {n: t.device for n, t in [*module.named_buffers(), *module.named_parameters()]}


def test_sparse_linear_buffers_follow_the_weight_device(meta_nonzero):
    lin = nn.Linear(6, 5, device=META)
    cpu_mask = torch.ones(5, 6, dtype=torch.bool)  # masks come from the store on the CPU
    layer = SparseLinear.from_dense(lin, cpu_mask)
    devices = _devices(layer)
    assert set(devices) == {"crow", "col", "crow_t", "col_t", "perm_t", "values", "bias"}
    assert set(devices.values()) == {META}, devices
    layer.update_mask(cpu_mask)  # a DST update with a CPU mask after .cuda()
    assert set(_devices(layer).values()) == {META}
    assert layer.mask.device == META and layer.to_dense().weight.device == META


def test_sparse_linear_trains_on_after_a_count_change_with_last_steps_graph_alive():
    # found by bench/gpu_check.py: a training loop's `loss` keeps the gradient accumulator of
    # `values` alive, sized for the old count; the backward after update_mask failed
    torch.manual_seed(0)
    layer = SparseLinear.from_dense(nn.Linear(8, 4), torch.rand(4, 8) < 0.3)
    x = torch.randn(2, 8)
    loss = layer(x).sum()
    loss.backward()
    mask = layer.mask.clone()
    mask[0] = True  # more weights: SNFS and DSR move counts between layers
    layer.update_mask(mask)
    layer(x).sum().backward()
    assert layer.values.grad.shape == (int(mask.sum()),)
    torch.testing.assert_close(layer.values.grad, x.sum(0).expand(4, 8)[mask])


def test_sparse_linear_structure_is_unchanged_on_cpu():
    # crow/crow_t are now searchsorted over the sorted indices (bincount syncs on CUDA): same values
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(7, 9, generator=g) < 0.4
    mask[3] = False  # an empty row
    layer = SparseLinear.from_dense(nn.Linear(9, 7), mask)
    rows, cols = mask.nonzero(as_tuple=True)
    assert layer.crow.tolist() == [0] + torch.bincount(rows, minlength=7).cumsum(0).tolist()
    assert layer.crow_t.tolist() == [0] + torch.bincount(cols, minlength=9).cumsum(0).tolist()
    assert torch.equal(layer.mask, mask)


# --- item 3: bf16 SparseLinear trains ----------------------------------------------------------------

def test_bf16_sparse_linear_forward_backward_match_dense_masked_bf16():
    torch.manual_seed(0)
    dense = nn.Linear(24, 16).to(torch.bfloat16)
    mask = torch.rand(16, 24) < 0.3
    layer = SparseLinear.from_dense(dense, mask)
    assert layer.values.dtype == layer.bias.dtype == torch.bfloat16
    for batch in (1, 5):
        x = torch.randn(batch, 24, dtype=torch.bfloat16)
        xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
        w = (dense.weight.detach() * mask).requires_grad_()
        ys = layer(xs)
        yd = F.linear(xd, w, dense.bias)
        assert ys.dtype == torch.bfloat16
        torch.testing.assert_close(ys, yd, rtol=2e-2, atol=2e-2)
        g = torch.randn_like(ys)
        layer.zero_grad()
        ys.backward(g)
        yd.backward(g)
        assert layer.values.grad.dtype == xs.grad.dtype == torch.bfloat16
        torch.testing.assert_close(xs.grad, xd.grad, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(layer.values.grad, w.grad[mask], rtol=2e-2, atol=2e-2)


def test_sparse_linear_backward_under_cpu_bf16_autocast_runs_in_float32():
    """`--precision bf16` on a CPU: the backward runs under autocast, which would hand the CSR
    products bf16 operands (MKL has no such kernel): they run in float32, so the gradients are
    those of the same layer without autocast, exactly."""
    torch.manual_seed(0)
    dense = nn.Linear(24, 16)
    mask = torch.rand(16, 24) < 0.3
    layer = SparseLinear.from_dense(dense, mask)
    layer.capture_dense_grad = True
    x = torch.randn(5, 24)
    grads = []
    for autocast in (False, True):
        xs = x.clone().requires_grad_()
        layer.zero_grad()
        layer.dense_grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = layer(xs).square().sum()
            loss.backward()
        grads.append((xs.grad, layer.values.grad, layer.dense_grad))
    for plain, cast in zip(*grads):
        assert cast.dtype == torch.float32 and torch.equal(plain, cast)


# --- item 2: export and bench on the weight's device and dtype; one synchronized clock --------------

def test_timing_waits_for_cuda_before_and_after(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    timing.seconds_per_call(lambda: events.append("call"), 3, device="cuda")
    assert events == ["sync", "call", "call", "call", "sync"]
    events.clear()
    timing.seconds_per_call(lambda: events.append("call"), 2, device="cpu")
    assert events == ["call", "call"]
    events.clear()
    timing.time_interleaved({"a": lambda: events.append("a"), "b": lambda: events.append("a")}, rounds=2,
                            device=torch.device("cuda", 0))
    trace = "".join("s" if e == "sync" else "a" for e in events)
    assert re.fullmatch(r"a(sa+s)+a(sa+s)+", trace), trace  # warm-up, then every measurement bracketed
    assert trace.count("s") == 2 * (2 + 2 * 2)  # 2 rep calibrations + 2 rounds x 2 fns
    assert timing.threads_apply("cpu") and not timing.threads_apply("cuda:1")


def test_export_times_on_the_weights_device_and_dtype(monkeypatch):
    seen = {}

    def fake_time(fns, rounds=7, device=None, **_):
        seen["device"] = device
        return {k: 1.0 + i for i, k in enumerate(fns)}
    monkeypatch.setattr(exporter_mod, "time_interleaved", fake_time)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)).to(torch.bfloat16)
    mask = torch.rand(32, 64) < 0.05
    mask[:16] = False  # empty rows: the row-pruned form applies, so there is something to time
    masks = Masks({"0.weight": mask})
    out = export_model(model, masks, 8)
    assert seen["device"] == model[0].weight.device
    # MKL has no bf16 CSR kernel: that form is not a candidate; the chosen form runs in bf16
    assert "csr" not in out[0].export_info["times"]
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    assert out(x).dtype == torch.bfloat16
    torch.testing.assert_close(out(x), model[2](model[1](F.linear(x, model[0].weight * masks["0.weight"],
                                                                   model[0].bias))))


def test_export_bakes_masks_on_the_weights_device():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(META)
    masks = Masks({"0.weight": torch.ones(5, 6, dtype=torch.bool), "2.weight": torch.ones(3, 5, dtype=torch.bool)})
    out = export_model(model, masks, 1, formats=(), measure=False)  # dense forms: no kernels timed
    assert {t.device for t in out.parameters()} == {META}
    assert out(torch.zeros(2, 6, device=META)).shape == (2, 3)


def test_bench_runs_a_bf16_model_and_records_where_it_ran():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)).to(torch.bfloat16)
    masks = Masks({"1.weight": torch.rand(32, 20) < 0.2, "3.weight": torch.rand(4, 32) < 0.5})
    r = benchmark(model, masks, (20,), batch_size=4, rounds=1, num_classes=4)
    assert (r["device"], r["dtype"], r["threads_apply"]) == ("cpu", "bfloat16", True)
    assert all(v["seconds"] > 0 for v in r["forward_backward"].values())
    assert format_benchmark(r).startswith("batch 4, 1 thread(s), bfloat16, ")
    gpu = format_benchmark({**r, "device": "cuda:0", "threads_apply": False, "dtype": "float32"})
    assert gpu.startswith("batch 4, cuda:0 (the CPU thread count does not apply), ")


# --- item 9: crop-and-flip: one non-blocking copy, no host sync ------------------------------------

class _Copies(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("device") not in (None, args[0].device):
            self.copies.append((args[0].device, kwargs["device"], kwargs.get("non_blocking", False)))
        return func(*args, **kwargs)


def test_crop_flip_on_a_device_copies_its_draws_once_without_waiting():
    x = torch.zeros(16, 3, 32, 32, device=META)
    with _Copies() as c, HostSyncs() as s:
        out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.device == META
    assert c.copies == [(torch.device("cpu"), META, True)]  # was three blocking copies
    assert not s.where
    # on the CPU (checked here and, draw by draw, in tests/test_data.py): no copy at all, and the
    # crops are those of the seed's three draws (top, left, flip), as before
    xc = torch.randn(16, 3, 32, 32)
    with _Copies() as c:
        a = augment_batch(xc, "crop-flip", torch.Generator().manual_seed(3))
    assert not c.copies
    g = torch.Generator().manual_seed(3)
    top, left = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = F.pad(xc, (4, 4, 4, 4))
    for i in range(16):
        crop = padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32]
        assert torch.equal(a[i], crop.flip(-1) if flip[i] else crop)


def test_draws_go_to_a_gpu_from_pinned_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append((a, k)) or self)
    augment_mod._to_device_async(torch.zeros(3, 4), torch.device("cuda", 0))
    assert calls == ["pin", ((torch.device("cuda", 0),), {"non_blocking": True})]


# --- item 10: DST updates read counts back once, not per layer ---------------------------------------

def _mlp(depth: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(40, 40) for _ in range(depth)])


def _update_syncs(method: str, depth: int, density: float = 0.3, **kw) -> Counter:
    model = _mlp(depth)
    g = torch.Generator().manual_seed(0)
    masks = Masks({f"{i}.weight": torch.rand(40, 40, generator=g) < density for i in range(depth)})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = Sparsifier(model, masks).attach(opt)
    dst = make_method(method, UpdateSchedule(delta_t=2, alpha=0.3, t_end=100), **kw)
    x, y = torch.randn(8, 40, generator=g), torch.randint(0, 40, (8,), generator=g)
    for step in (1, 2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with HostSyncs() as s:
            dst.after_backward(step, model, sp)
        if step == 1:
            assert not s.where  # a plain step (SNFS's statistic included) never syncs
        opt.step()
    assert dst.history and dst.history[-1]["dropped"] > 0
    return s.where


@pytest.mark.parametrize("method, kw, own", [("rigl", {}, 2), ("set", {}, 2), ("snfs", {}, 3), ("dsr", {}, 3),
                                             ("rigl", {"grow_init": "init"}, 2), ("rigl", {"density": 0.05}, 2),
                                             ("snfs", {"density": 0.05}, 3)])
def test_dst_update_syncs_do_not_grow_with_depth(method, kw, own):
    """Before: 7 (RigL, SET) to 11 (SNFS, DSR) syncs per layer in dst.py and sparsifier.py, then
    masks.top_k's count of allowed positions (and nonzero on layers under 1/8 dense, density 0.05
    here): 2-3 per layer. Now a fixed `own` per update, all in dst.py: top_k is handed the counts."""
    for depth in (2, 5):
        syncs = _update_syncs(method, depth, **kw)
        assert syncs == {"dst.py": own}, syncs


def test_snfs_statistic_is_one_foreach_pair_per_step():
    class Calls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names[getattr(func, "__name__", "")] += 1
            return func(*args, **(kwargs or {}))
    model = _mlp(4)
    masks = Masks({f"{i}.weight": torch.ones(40, 40, dtype=torch.bool) for i in range(4)})
    sp = Sparsifier(model, masks)
    dst = make_method("snfs", UpdateSchedule(delta_t=100, t_end=1000))
    for step in (1, 2):
        model(torch.randn(3, 40)).sum().backward()
        with Calls() as c:
            dst.after_backward(step, model, sp)
    assert c.names["_foreach_mul_"] == c.names["_foreach_add_"] == 1
    assert c.names["mul_"] == c.names["add_"] == 0


# --- item 13 (first half): grow scores stay float32 under bf16 weights -----------------------------

class _GrowByIndex(DropGrow):
    """Grow score 1 + 1e-5 * position: distinct in float32, all 1.0 in bf16 (spacing 2^-7)."""

    def grow_score(self, layer):
        return 1.0 + 1e-5 * torch.arange(layer.weight.numel(), dtype=torch.float32).view(layer.weight.shape)


def test_bf16_weights_grow_by_float32_scores():
    lin = nn.Linear(16, 4, bias=False).to(torch.bfloat16)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask.view(-1)[:32] = True  # positions 0..31 active
    with torch.no_grad():  # |w| = k/32 at position k-1: exact in bf16, so the drop is by hand
        lin.weight.view(-1)[:32] = torch.arange(1, 33, dtype=torch.bfloat16) / 32
    sp = Sparsifier(lin, Masks({"weight": mask}))
    method = _GrowByIndex(UpdateSchedule(delta_t=1, alpha=0.25, t_end=10, kind="constant"))
    scores = 1.0 + 1e-5 * torch.arange(64, dtype=torch.float32)
    assert scores.unique().numel() == 64 and scores.to(torch.bfloat16).unique().numel() == 1  # all tie in bf16
    method.update(1, lin, sp)
    new = sp.masks["weight"].view(-1)
    # floor(0.25 * 32) = 8 dropped: positions 0..7; grown: the 8 highest float32 scores among the
    # 40 candidates (0..7 and 32..63), i.e. positions 56..63
    expected = torch.zeros(64, dtype=torch.bool)
    expected[8:32] = True
    expected[56:] = True
    assert torch.equal(new, expected)


def test_snfs_statistic_of_bf16_gradients_is_float32():
    lin = nn.Linear(8, 8).to(torch.bfloat16)
    sp = Sparsifier(lin, Masks({"weight": torch.ones(8, 8, dtype=torch.bool)}))
    dst = make_method("snfs", UpdateSchedule(delta_t=100, t_end=1000))
    lin(torch.randn(2, 8, dtype=torch.bfloat16)).float().sum().backward()
    dst.after_backward(1, lin, sp)
    assert dst.stats["weight"].dtype == torch.float32
    torch.testing.assert_close(dst.stats["weight"], 0.1 * lin.weight.grad.float())


# --- item 11: pruning at initialisation scores on the run's device ---------------------------------

@pytest.mark.parametrize("budget", ["uniform", "global"])
def test_pai_scores_on_the_run_device(tiny_npz, tmp_path, monkeypatch, budget):
    seen = {}

    def fake_score(model, masks, batches, loss_fn, **_):
        seen["model"] = {p.device for p in model.parameters()}
        seen["masks"] = {m.device for m in masks.values()}
        seen["batches"] = {t.device for b in batches for t in b}
        # on the CPU: meta has no data to hand back (compute_scores moves them to the masks' device)
        return {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(0)) for n, m in masks.items()}

    def fake_prune(scores, current, density, scope):  # the real one needs data, which meta lacks
        seen["pruned_on"] = {s.device for s in scores.values()}
        return Masks({n: torch.ones(m.shape, dtype=torch.bool) for n, m in current.items()})
    monkeypatch.setitem(scores_mod.SCORES, "snip", fake_score)
    monkeypatch.setattr(scores_mod, "prune_to_density", fake_prune)
    cfg = RunConfig(kind="pai", data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40),
                    model=ModelConfig(model="lenet-300-100"), train=TrainConfig(duration="1ep"),
                    pai=PaiConfig(score="snip", budget=budget, density=0.9 if budget == "global" else 0.5))
    ctx = RunContext.prepare(cfg, root=tmp_path, device="meta")
    model = ctx.new_model(("init",))
    masks, _ = pai_masks(ctx, model)
    assert seen["model"] == seen["masks"] == seen["batches"] == {META}
    if budget == "global":
        assert seen["pruned_on"] == {META}
    assert {m.device for m in masks.values()} == {torch.device("cpu")}  # saved as before
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}  # the caller's model stays
