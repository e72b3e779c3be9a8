"""--execution sparse (issue 12): masked Linear layers train as SparseLinear where measured faster;
DST methods update them in place with the same masks and weights as masked training."""
import gc
from dataclasses import replace
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jackpot.train.loop as loop
from jackpot.cli import main
from jackpot.config import DataConfig, ModelConfig, RunConfig, SparseConfig, TrainConfig, run_hash
from jackpot.data.dataset import Dataset
from jackpot.errors import JackpotError
from jackpot.models import create_model
from jackpot.procedures import run
from jackpot.sparse import Masks, Sparsifier, execution
from jackpot.sparse.dst import UpdateSchedule, make_method
from jackpot.sparse.execution import SparseExecution, choose_layers
from jackpot.sparse.sparse_linear import SparseLinear
from jackpot.train.loop import Stage, train_stage
from jackpot.train.optim import build_optimizer

SHAPES = [(20, 48), (48, 64), (64, 4)]  # distinct weight shapes: a dense copy of one is recognisable


def forced(monkeypatch, sparse_from: int = 48):
    """The per-layer choice without timing: layers with at least `sparse_from` inputs run sparse."""
    calls = []

    def fake(linear, mask, rows, input_grad, make_optimizer, rounds=5):
        calls.append((linear.in_features, rows, input_grad))
        return {"masked": 1.0, "sparse": 0.5 if linear.in_features >= sparse_from else 2.0}
    monkeypatch.setattr(execution, "measure_layer", fake)
    return calls


def tiny_data():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (200,), generator=g)
    x = torch.randn(4, 20, generator=g)[y] * 2 + torch.randn(200, 20, generator=g)
    return Dataset("t", x, y, x[:50], y[:50], 4)


def tiny_model_and_masks(bias_masks=False):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(*SHAPES[0]), nn.ReLU(), nn.Linear(*SHAPES[1]), nn.ReLU(), nn.Linear(*SHAPES[2]))
    g = torch.Generator().manual_seed(1)
    masks = Masks({n: torch.rand(p.shape, generator=g) < 0.3 for n, p in model.named_parameters()
                   if bias_masks or n.endswith("weight")})
    return model, masks


def stage_run(tmp_path, mode, method, steps=200, optimizer="sgd", holder=None, **method_kw):
    """Train the tiny MLP with `method` through train_stage; the masks after every update are logged
    (`holder["model"]`: the model, for a look during training)."""
    model, masks = tiny_model_and_masks()
    if holder is not None:
        holder["model"] = model
    cb = make_method(method, UpdateSchedule(delta_t=20, alpha=0.3, t_end=150), seed=0, **method_kw)
    log, real = [], cb.update

    def logged(step, m, sparsifier):
        out = real(step, m, sparsifier)
        log.append(({n: v.clone() for n, v in sparsifier.masks.items()}, type(model[2]).__name__))
        return out
    cb.update = logged
    train = TrainConfig(optimizer=optimizer, lr=0.05, momentum=0.9 if optimizer == "sgd" else 0.0, execution=mode)
    d = tmp_path / mode / method
    record = train_stage(Stage(dir=d, model=model, dataset=tiny_data(), train=train, batch_size=10, order_seed=1,
                               start=0, end=steps, masks=masks, callbacks=[cb]))
    return torch.load(d / "final.pt", weights_only=True), log, record, model


@pytest.mark.parametrize("method,grow_init", [("rigl", "zero"), ("set", "zero"), ("snfs", "zero"), ("dsr", "zero"),
                                              ("static", "zero"), ("rigl", "init"), ("set", "init")])
def test_masked_and_sparse_execution_make_the_same_updates_and_end_with_the_same_weights(tmp_path, monkeypatch,
                                                                                         method, grow_init):
    forced(monkeypatch)
    dense, dense_log, dense_record, _ = stage_run(tmp_path, "masked", method, grow_init=grow_init)
    sparse, sparse_log, sparse_record, model = stage_run(tmp_path, "sparse", method, grow_init=grow_init)
    assert len(dense_log) == len(sparse_log) == (0 if method == "static" else 7)
    # the update records (dropped, grown new, regrown, explored share) are counted the same way
    assert dense_record.get("mask_updates") == sparse_record.get("mask_updates")
    if method != "static":
        assert sum(u["grown_new"] for u in sparse_record["mask_updates"]) > 0
    if method in ("rigl", "set", "snfs"):  # DSR grows just-dropped positions last: none regrow here
        assert sum(u["regrown"] for u in sparse_record["mask_updates"]) > 0
    for (a, layer_a), (b, layer_b) in zip(dense_log, sparse_log):
        assert (layer_a, layer_b) == ("Linear", "SparseLinear")  # the update really ran on the sparse layer
        assert all(torch.equal(a[n], b[n]) for n in a)
    if method != "static":  # the updates did move the masks of the sparse layers
        assert not torch.equal(sparse_log[0][0]["2.weight"], sparse_log[-1][0]["2.weight"])
    assert list(dense) == list(sparse) and all(dense[k].shape == sparse[k].shape for k in dense)
    assert max(float((dense[k] - sparse[k]).abs().max()) for k in dense) < 1e-5
    assert sparse_record["execution"]["sparse"] == ["2.weight", "4.weight"]
    assert sparse_record["execution"]["masked"] == ["0.weight"]
    assert "execution" not in dense_record
    assert isinstance(model[2], nn.Linear)  # the caller's model is dense again, with the trained weights
    # every tensor as final.pt holds it: the masked reference timed after training left no trace
    assert all(torch.equal(v, sparse[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def _layer_state(optimizer, param, mask=None):
    """Adam's moments as dense tensors (a sparse layer's scattered to their positions)."""
    state = optimizer.state[param]
    if mask is None:
        return {k: state[k].clone() for k in ("exp_avg", "exp_avg_sq")}
    out = {}
    for k in ("exp_avg", "exp_avg_sq"):
        full = torch.zeros(mask.shape)
        full[mask] = state[k]
        out[k] = full
    return out


def test_optimizer_state_moves_with_the_weights_that_stay_and_is_zero_for_grown_ones(monkeypatch):
    """Adam, a RigL update at step 20: per layer, masked and sparse state agree at every position;
    the sparse layer's state of kept weights is what it was, that of grown weights zero."""
    forced(monkeypatch)
    x, y = tiny_data().x_train[:10], tiny_data().y_train[:10]
    seen = {}
    for mode in ("masked", "sparse"):
        model, masks = tiny_model_and_masks()
        method = make_method("rigl", UpdateSchedule(delta_t=20, alpha=0.3, t_end=150), seed=0)
        if mode == "sparse":
            sp = SparseExecution(model, masks, choose_layers(model, masks, x, lambda ps: None))
            cb = sp.wrap(method)
        else:
            sp, cb = Sparsifier(model, masks), method
        optimizer = build_optimizer(model.parameters(), TrainConfig(optimizer="adam", lr=1e-2))
        sp.attach(optimizer)
        for step in range(21):
            cb.on_step_start(step, model, sp) if hasattr(cb, "on_step_start") else None
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            param = model[2].values if mode == "sparse" else model[2].weight
            if step == 20:
                old_mask = sp.masks["2.weight"].clone()
                before = _layer_state(optimizer, param, old_mask if mode == "sparse" else None)
            cb.after_backward(step, model, sp)
            if step == 20:
                new_mask = sp.masks["2.weight"]
                seen[mode] = (before, _layer_state(optimizer, param, new_mask if mode == "sparse" else None),
                              old_mask, new_mask.clone())
            optimizer.step()
    before, after, old, new = seen["sparse"]
    grown, kept = new & ~old, new & old
    assert int(grown.sum()) > 0 and int((old & ~new).sum()) > 0
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(after[k][kept], before[k][kept])
        assert (after[k][grown] == 0).all() and float(before[k][kept].abs().sum()) > 0
        assert torch.allclose(after[k], seen["masked"][1][k], atol=1e-7)  # exactly as masked mode leaves it
    assert torch.equal(new, seen["masked"][3])


def test_no_dense_weight_of_a_sparse_layer_is_held_between_updates(tmp_path, monkeypatch):
    forced(monkeypatch)
    real, probes = loop.F.cross_entropy, []
    sparse_shapes = {(out, inp) for inp, out in SHAPES[1:]}

    def probing(*a, **kw):
        probes.append(len(probes))
        if len(probes) in (15, 35):  # steps 14 and 34: between updates (one at step 20)
            layers = [m for m in holder["model"].modules() if isinstance(m, SparseLinear)]
            assert len(layers) == 2
            for layer in layers:
                tensors = list(layer.parameters()) + list(layer.buffers())
                assert max(t.numel() for t in tensors) <= layer.values.numel() + layer.out_features + 1
                assert layer.dense_grad is None and not layer.capture_dense_grad
            gc.collect()
            with warnings.catch_warnings():  # isinstance on some of torch's deprecated objects warns
                warnings.simplefilter("ignore")
                dense = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.is_floating_point()
                         and tuple(o.shape) in sparse_shapes]
            assert dense == []
        return real(*a, **kw)
    holder = {}
    monkeypatch.setattr(loop.F, "cross_entropy", probing)
    stage_run(tmp_path, "sparse", "rigl", steps=40, holder=holder)
    assert len(probes) >= 35


def test_a_killed_sparse_run_resumes_with_its_recorded_layer_choice_and_ends_identical(tmp_path, monkeypatch):
    calls = forced(monkeypatch)
    clean, _, _, _ = stage_run(tmp_path / "clean", "sparse", "rigl", steps=100, optimizer="adam")
    real, count = loop.F.cross_entropy, [0]

    def dying(*a, **kw):
        count[0] += 1
        if count[0] == 75:  # step 74 of 100: after the checkpoints of epochs 1-3 (20 steps each)
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(loop.F, "cross_entropy", dying)
    with pytest.raises(KeyboardInterrupt):
        stage_run(tmp_path / "killed", "sparse", "rigl", steps=100, optimizer="adam")
    monkeypatch.setattr(loop.F, "cross_entropy", real)
    assert (tmp_path / "killed/sparse/rigl/checkpoint.pt").exists()
    ckpt = torch.load(tmp_path / "killed/sparse/rigl/checkpoint.pt", weights_only=False)
    flags = list(ckpt["masks"].values()) + list(ckpt["callbacks"][0]["ever_active"].values())
    assert flags and all(f["packed_flags"].dtype == torch.uint8 for f in flags)  # 8 flags a byte on disk
    measured = len(calls)
    resumed, _, record, _ = stage_run(tmp_path / "killed", "sparse", "rigl", steps=100, optimizer="adam")
    assert len(calls) == measured  # the checkpoint's choice, not a new measurement
    assert record["execution"]["sparse"] == ["2.weight", "4.weight"]
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)


def test_the_choice_is_measured_per_layer_at_the_batch_rows(monkeypatch):
    """A large, 1%-dense layer trains faster sparse; a tiny one stays masked dense; a convolution
    without a whole empty channel stays masked with its reason; the rows are the batch's and the first layer needs no input grad."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Unflatten(1, (1, 16)), nn.Conv1d(1, 2, 3, padding=1), nn.Flatten(),
                          nn.Linear(32, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 8),
                          nn.ReLU(), nn.Linear(8, 8))
    g = torch.Generator().manual_seed(0)
    density = {"1.weight": 0.5, "3.weight": 0.5, "5.weight": 0.01, "7.weight": 0.5, "9.weight": 0.5}
    masks = Masks({n: torch.rand(model.get_parameter(n).shape, generator=g) < d for n, d in density.items()})
    plan = choose_layers(model, masks, torch.randn(32, 16),
                         lambda ps: build_optimizer(ps, TrainConfig(optimizer="sgd", lr=0.1)), rounds=3)
    assert plan["5.weight"]["execution"] == "sparse"
    assert plan["5.weight"]["seconds"]["sparse"] < plan["5.weight"]["seconds"]["masked"]
    assert plan["9.weight"]["execution"] == "masked"
    assert plan["1.weight"] == {"execution": "masked", "density": pytest.approx(float(masks["1.weight"].float().mean())),
                                "reason": "unstructured conv mask (no whole empty channel): masked dense"}
    assert plan["3.weight"]["rows"] == plan["9.weight"]["rows"] == 32


def test_final_weights_are_dense_and_the_summary_records_the_layer_choice(tiny_npz, tmp_path, monkeypatch):
    forced(monkeypatch, sparse_from=100)  # lenet-300-100: fc2 (300 in) and fc3 (100 in) sparse

    def cfg(execution, method="rigl"):
        return RunConfig(kind="sparse", data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40),
                         model=ModelConfig(model="lenet-300-100"), train=TrainConfig(duration="3ep", execution=execution),
                         sparse=SparseConfig(method=method, density=0.2, distribution="uniform", delta_t=4))
    masked = run(cfg("masked"), root=tmp_path, progress=lambda _: None)
    sparse = run(cfg("sparse"), root=tmp_path, progress=lambda _: None)
    assert masked.path != sparse.path  # hashed: equal only within float tolerance
    # no masks, nothing runs sparse: the dense baseline is one run whatever --execution says
    assert run_hash(cfg("sparse", "dense")) == run_hash(cfg("masked", "dense"))
    a = torch.load(masked.path / "train/final.pt", weights_only=True)
    b = torch.load(sparse.path / "train/final.pt", weights_only=True)
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    model = create_model("lenet-300-100", (20,), 4)
    model.load_state_dict(b)
    mask = Masks.load(sparse.path / "train/mask.pt")
    assert (b["fc2.weight"][~mask["fc2.weight"]] == 0).all()
    summary = json.loads((sparse.path / "summary.json").read_text())
    assert summary["execution"]["sparse"] == ["fc2.weight", "fc3.weight"]
    assert summary["execution"]["layers"]["fc2.weight"]["rows"] == 40
    assert set(summary["execution"]["layers"]["fc2.weight"]["seconds"]) == {"masked", "sparse"}
    assert json.loads((masked.path / "summary.json").read_text())["execution"] == {"mode": "masked"}


def test_sparse_execution_refuses_fp16_and_torchrun_before_writing(tiny_npz, store, capsys, tmp_path, monkeypatch):
    status = main(["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--execution", "sparse",
                   "--precision", "fp16", "--threads", "1", "--device", "cpu"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jackpot: error: --execution sparse does not run with --precision fp16")
    assert not store.exists() or not any(store.glob("sparse-*"))
    monkeypatch.setattr(loop.ddp, "is_distributed", lambda: True)  # as under torchrun (one rank is enough)
    monkeypatch.setattr(loop.ddp, "world_size", lambda: 1)
    model, masks = tiny_model_and_masks()
    with pytest.raises(JackpotError, match="one process"):
        train_stage(Stage(dir=tmp_path / "s", model=model, dataset=tiny_data(), train=TrainConfig(execution="sparse"),
                          batch_size=10, order_seed=1, start=0, end=5, masks=masks))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kind", ["lottery", "pai"])
def test_lottery_arms_and_pai_retraining_run_sparse_with_the_masked_weights(tiny_npz, tmp_path, monkeypatch, kind):
    """Every training stage with masks reads --execution: lottery's levels and control arms, pai's
    training after pruning; each stage's final weights equal the masked run's within 1e-5."""
    forced(monkeypatch, sparse_from=100)  # lenet-300-100: fc2 and fc3 sparse

    def cfg(execution):
        base = RunConfig(kind=kind, data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40),
                         model=ModelConfig(model="lenet-300-100"), train=TrainConfig(duration="2ep", execution=execution))
        if kind == "lottery":
            return replace(base, lottery=replace(base.lottery, levels=2, controls="random"))
        return replace(base, pai=replace(base.pai, score="magnitude", density=0.2))
    runs = {mode: run(cfg(mode), root=tmp_path / mode, progress=lambda _: None).path for mode in ("masked", "sparse")}
    finals = sorted(p.relative_to(runs["masked"]) for p in runs["masked"].rglob("final.pt"))
    assert finals == sorted(p.relative_to(runs["sparse"]) for p in runs["sparse"].rglob("final.pt"))
    assert len(finals) == (5 if kind == "lottery" else 1)  # level 0, levels 1-2 with a random arm; pai: one
    ran_sparse = 0
    for rel in finals:
        a, b = (torch.load(runs[m] / rel, weights_only=True) for m in ("masked", "sparse"))
        assert list(a) == list(b) and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5, rel
        record = json.loads((runs["sparse"] / rel.parent / "done.json").read_text())
        ran_sparse += record.get("execution", {}).get("sparse") == ["fc2.weight", "fc3.weight"]
    assert ran_sparse >= (4 if kind == "lottery" else 1)  # every stage with masks (level 0 may have none)


def test_zero_state_at_takes_a_mask_or_flat_indices_alike(monkeypatch):
    """Optimizer state zeroed at grown positions: given as a bool mask or as flat indices, on a
    masked layer (Sparsifier) and on a sparse layer (SparseExecution), the same state results."""
    forced(monkeypatch)
    x, y = tiny_data().x_train[:10], tiny_data().y_train[:10]
    states = {}
    for mode in ("masked", "sparse"):
        for form in ("mask", "index"):
            model, masks = tiny_model_and_masks()
            if mode == "sparse":
                sp = SparseExecution(model, masks, choose_layers(model, masks, x, lambda ps: None))
            else:
                sp = Sparsifier(model, masks)
            optimizer = build_optimizer(model.parameters(), TrainConfig(optimizer="adam", lr=1e-2))
            sp.attach(optimizer)
            for _ in range(2):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            for name in ("0.weight", "2.weight"):
                at = masks[name].view(-1).nonzero().squeeze(1)[::3]  # every third active weight
                if form == "mask":
                    flags = torch.zeros(masks[name].numel(), dtype=torch.bool)
                    flags[at] = True
                    at = flags.view(masks[name].shape)
                sp.zero_state_at(name, at)
            param = model[2].values if mode == "sparse" else model[2].weight
            states[mode, form] = (_layer_state(optimizer, model[0].weight),
                                  _layer_state(optimizer, param, masks["2.weight"] if mode == "sparse" else None))
    first = states["masked", "mask"]
    zeroed = masks["2.weight"].view(-1).nonzero().squeeze(1)[::3]
    assert (first[1]["exp_avg"].view(-1)[zeroed] == 0).all() and float(first[1]["exp_avg"].abs().sum()) > 0
    for key, (layer0, layer2) in states.items():
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(layer0[k], first[0][k], atol=1e-7), key
            assert torch.allclose(layer2[k], first[1][k], atol=1e-7), key


@pytest.mark.parametrize("fast, slow, decided", [
    (0.005, 0.1, True),     # a slow masked form 20x the sparse one: one call decides
    (0.005, 0.045, False),  # 9x, but a 45 ms call might hold a preemption: rounds
    (0.02, 0.035, True),    # both over SLOW and CLEAR apart
    (0.02, 0.025, False),   # both slow, too close
    (0.004, 0.012, False),  # both fast: rounds
])
def test_one_call_decides_only_when_the_gap_cannot_be_noise(monkeypatch, fast, slow, decided):
    timed = iter([fast, slow])
    monkeypatch.setattr(execution, "seconds_per_call", lambda fn, n, dev: next(timed))
    monkeypatch.setattr(execution, "time_interleaved", lambda fns, rounds, device: "rounds")
    out = execution._time_forms({"sparse": lambda: None, "masked": lambda: None}, "cpu", 5)
    assert out == ({"sparse": fast, "masked": slow} if decided else "rounds")
