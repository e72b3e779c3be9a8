"""Issue 14: precision, memory format, compilation and determinism (train/numerics.py), and the
device a run was begun on. CPU tests: bf16 autocast, an fp16 grad scaler, channels_last, torch.compile
(aot_eager) keep every mask invariant; CUDA switches are checked through fakes."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jackpot.cli import main
from jackpot.errors import JackpotError
from jackpot.store import check_threads, device_kind
from jackpot.train import numerics


def _run(store, npz, *extra, kind="sparse", model="lenet-300-100"):
    argv = [kind, "--dataset", f"npz:{npz}", "--model", model, "--batch-size", "40", "--duration", "2ep",
            "--threads", "1", "--device", "cpu", "--store", str(store), *extra]
    if kind == "sparse":
        argv += ["--method", "rigl", "--density", "0.2", "--delta-t", "3", "--optimizer", "sgd", "--lr", "0.05",
                 "--momentum", "0.9"]
    assert main([str(a) for a in argv]) == 0
    (path,) = [p for p in Path(store).iterdir() if p.name.startswith(f"{kind}-")]
    return path


def _masked_invariants(stage: Path):
    """Pruned weights are exactly zero in the trained weights, and the recorded density is the mask's."""
    final = torch.load(stage / "final.pt", weights_only=True)
    masks = torch.load(stage / "mask.pt", weights_only=True)
    for name, m in masks.items():
        assert final[name].dtype == torch.float32  # storage stays float32 under autocast
        assert torch.all(final[name][~m] == 0), name
    done = json.loads((stage / "done.json").read_text())
    assert done["density"] == pytest.approx(sum(int(m.sum()) for m in masks.values()) /
                                            sum(m.numel() for m in masks.values()))
    return final, masks, done


@pytest.mark.parametrize("extra", [("--precision", "bf16"), ("--precision", "fp16"), ("--compile", "aot_eager")])
def test_rigl_keeps_its_mask_invariants_under_each_precision_and_compile(tiny_npz, tmp_path, extra):
    plain = _run(tmp_path / "fp32", tiny_npz)
    other = _run(tmp_path / "other", tiny_npz, *extra)
    assert other.name != plain.name  # a different computation: its own run
    w_plain, m_plain, _ = _masked_invariants(plain / "train")
    w_other, m_other, done = _masked_invariants(other / "train")
    assert done["final"]["test_acc"] > 0.5  # it learned
    diff = max(float((w_plain[n] - w_other[n]).abs().max()) for n in w_plain)
    if extra[0] == "--compile":
        # the same arithmetic traced: the same masks, weights within float noise
        assert all(torch.equal(m_plain[n], m_other[n]) for n in m_plain) and diff < 1e-4
    else:
        assert diff > 0  # autocast really ran in low precision


def test_the_fp16_scaler_hands_callbacks_true_gradients(tiny_npz, tmp_path):
    """RigL reads gradients between backward and step: under fp16 they must be unscaled (the
    scaler starts at 2**16; a scaled gradient would be ~65536 times the fp32 one)."""
    from jackpot.config import TrainConfig
    from jackpot.data import load_dataset
    from jackpot.models import create_model
    from jackpot.train import Stage, train_stage

    ds = load_dataset(f"npz:{tiny_npz}")
    norms = {}

    class Probe:
        def after_backward(self, step, model, sparsifier):
            if step == 0:
                norms[len(norms)] = float(model.fc1.weight.grad.norm())
            return False

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    for i, precision in enumerate(("fp32", "fp16")):
        torch.manual_seed(0)
        model = create_model("lenet-300-100", ds.input_shape, ds.num_classes)
        train_stage(Stage(tmp_path / f"s{i}", model, ds, TrainConfig(duration="1it", precision=precision), 40,
                          order_seed=0, start=0, end=1, callbacks=[Probe()]))
    assert norms[1] == pytest.approx(norms[0], rel=0.05)


def test_channels_last_convnet_trains_like_the_default_layout(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3, 32, 32)).astype(np.float32)
    y = (x[:, 0, :16].mean(axis=(1, 2)) > 0).astype(np.int64)
    npz = tmp_path / "img.npz"
    np.savez(npz, x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    plain = _run(tmp_path / "a", npz, "--duration", "3ep", model="conv-2")
    nhwc = _run(tmp_path / "b", npz, "--duration", "3ep", "--channels-last", model="conv-2")
    w_a, m_a, _ = _masked_invariants(plain / "train")
    w_b, m_b, _ = _masked_invariants(nhwc / "train")
    assert all(torch.equal(m_a[n], m_b[n]) for n in m_a)
    assert max(float((w_a[n] - w_b[n]).abs().max()) for n in w_a) < 1e-4


def test_deterministic_mode_sets_the_cuda_switches(monkeypatch):
    calls = {}
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only=False: calls.update(det=on))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        numerics.configure_device(torch.device("cuda", 0), "fp32", deterministic=True)
        import os
        assert calls == {"det": True} and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert cudnn.deterministic and not cudnn.benchmark and not cudnn.allow_tf32 and not matmul.allow_tf32
        numerics.configure_device(torch.device("cuda", 0), "tf32", deterministic=False)
        assert calls == {"det": False} and cudnn.benchmark and cudnn.allow_tf32 and matmul.allow_tf32
        calls.clear()
        numerics.configure_device(torch.device("cpu"), "fp32", deterministic=True)
        assert calls == {}  # CPU: nothing to switch
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_a_run_refuses_to_continue_on_another_kind_of_device(tiny_npz, tmp_path, capsys):
    store = tmp_path / "store"
    run = _run(store, tiny_npz, "--fraction", "0.5", "--levels", "1", kind="lottery")
    record = json.loads((run / "config.json").read_text())
    assert record["device"] == "cpu"
    record["device"] = "cuda (NVIDIA H200)"  # as if it had been begun on a GPU
    (run / "config.json").write_text(json.dumps(record))
    argv = ["lottery", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "2ep", "--threads", "1", "--device", "cpu", "--store", str(store),
            "--fraction", "0.5", "--levels", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "begun on cuda (NVIDIA H200) and would now run on cpu" in err
    assert not (run / "level_02").exists()
    argv[argv.index("--levels") + 1] = "1"
    assert main(argv) == 0  # finished: shown anywhere
    with pytest.raises(JackpotError, match="begun on cuda"):
        check_threads(run, device="cpu")
    check_threads(run)  # device not given: only the thread count is checked
    assert device_kind("cpu") == "cpu"


@pytest.mark.parametrize("extra, words", [
    (("--device", "meta"), "unknown --device 'meta'"), (("--device", "mps"), "unknown --device 'mps'"),
    (("--compile", "foo"), "unknown --compile backend 'foo'"),
    (("--loader-workers", "-1"), "--loader-workers must be >= 0")])
def test_devices_backends_and_workers_jackpot_cannot_use_are_refused_before_anything_is_written(
        tiny_npz, tmp_path, capsys, extra, words):
    store = tmp_path / "store"
    argv = ["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--duration", "1ep",
            "--threads", "1", "--store", str(store), *extra]
    if "--device" not in extra:
        argv += ["--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not store.exists()


def test_denormals_flush_makes_training_arithmetic_flush_subnormals_and_is_its_own_run(tiny_npz, tmp_path,
                                                                                       monkeypatch):
    import jackpot.train.loop as loop
    real, seen = loop.F.cross_entropy, []

    def probing(*a, **kw):  # a subnormal times one, in the training step's arithmetic
        seen.append(float(torch.tensor([1e-39]) * torch.tensor([1.0])))
        return real(*a, **kw)
    monkeypatch.setattr(loop.F, "cross_entropy", probing)
    try:
        keep = _run(tmp_path / "keep", tiny_npz)
        kept, seen[:] = list(seen), []
        flush = _run(tmp_path / "flush", tiny_npz, "--denormals", "flush")
        flushed = list(seen)
    finally:
        torch.set_flush_denormal(False)
    assert kept and all(v == pytest.approx(1e-39, rel=1e-3) for v in kept)
    assert flushed and all(v == 0.0 for v in flushed)
    assert keep.name != flush.name  # hashed: a different computation
    assert json.loads((flush / "config.json").read_text())["canonical"]["train"]["denormals"] == "flush"
    with pytest.raises(JackpotError, match="denormals"):
        numerics.configure_device(torch.device("cpu"), "fp32", True, "sometimes")
