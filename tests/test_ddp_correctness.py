"""Issue 14, multi-process correctness (gloo, CPU). Under torchrun with 2 and 3 processes, batch
sizes that do not split evenly (50 examples in batches of 7: the last has 1; of 4: the last has 2,
fewer than 3 ranks) and crop-flip augmentation, a DDP stage trains the network one process trains;
a stage that diverges (lr 1e6) is recorded diverged on every rank and ends without a hang; a BN
model whose last batch leaves a rank fewer than 2 examples is refused on every rank, before any
file is written. Also: the device and MASTER_ADDR rules of ddp.init, and the global average pool
of the convnets (a mean: AdaptiveAvgPool2d's CUDA backward is not deterministic)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CASES = {"b7": dict(batch_size=7), "b4": dict(batch_size=4), "nan": dict(batch_size=7, fixed_lr=1e6)}


def _stage(path, batch_size, fixed_lr=None, batchnorm=False):
    """50 augmented 1x6x6 images of 3 classes, a small convnet, 2 epochs of SGD with momentum."""
    import torch.nn as nn

    from jackpot.config import TrainConfig
    from jackpot.data.dataset import Dataset
    from jackpot.train.loop import Stage
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (60,), generator=g)
    x = torch.randn(3, 1, 6, 6, generator=g)[y] + 0.5 * torch.randn(60, 1, 6, 6, generator=g)
    ds = Dataset("t", x[:50], y[:50], x[50:], y[50:], 3, augment="crop-flip")
    torch.manual_seed(5)
    norm = [nn.BatchNorm2d(4)] if batchnorm else []
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), *norm, nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    spe = -(-50 // batch_size)
    return Stage(dir=Path(path), model=model, dataset=ds, batch_size=batch_size, order_seed=11, start=0,
                 end=2 * spe, fixed_lr=fixed_lr,
                 train=TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4))


def _worker(out: str) -> None:
    """Run under torchrun: every case, then the NaN check and the BN refusal; each rank saves what it saw."""
    import torch.nn as nn

    from jackpot.errors import JackpotError
    from jackpot.launch import ddp
    from jackpot.train.loop import _check_ranks_agree, train_stage

    env, _ = ddp.init("gloo")
    torch.set_num_threads(1)
    seen = {}
    for name, kw in CASES.items():
        stage = _stage(Path(out) / name, **kw)
        record = train_stage(stage)  # trains stage.model in place: the weights this rank ends with
        seen[name] = {"diverged": record["diverged"], "train_loss": record["final"]["train_loss"],
                      "weights": {k: v.detach().clone() for k, v in stage.model.state_dict().items()}}
    # one rank alone with a NaN loss: every rank reads NaN (and so stops at the same step)
    last = env.world_size - 1
    seen["batch_mean"] = [float(ddp.batch_mean(torch.tensor(float(env.rank + 1)), 10)),
                          float(ddp.batch_mean(torch.tensor(float("nan") if env.rank == last else 1.0), 10))]
    nan_model = nn.Linear(3, 2)
    with torch.no_grad():
        nan_model.weight.fill_(float("nan"))
        nan_model.bias.fill_(env.rank)  # differs across ranks: must still be caught
    try:
        _check_ranks_agree(nan_model, None)
        seen["differing_caught"] = False
    except RuntimeError:
        seen["differing_caught"] = True
    with torch.no_grad():
        nan_model.bias.fill_(0.0)
    _check_ranks_agree(nan_model, None)  # NaN on every rank agrees: no raise
    try:  # the last batch of 7 is 1 example: some rank has fewer than 2 for BatchNorm
        train_stage(_stage(Path(out) / "bn", 7, batchnorm=True))
        seen["bn_refused"] = None
    except JackpotError as e:
        seen["bn_refused"] = str(e)
    torch.save(seen, Path(out) / f"rank{env.rank}.pt")
    ddp.shutdown()


def _single_process(tmp_path):
    from jackpot.train.loop import train_stage
    ref = {}
    for name, kw in CASES.items():
        stage = _stage(tmp_path / "single" / name, **kw)
        record = train_stage(stage)
        ref[name] = {"diverged": record["diverged"], "train_loss": record["final"]["train_loss"],
                     "weights": {k: v.detach().clone() for k, v in stage.model.state_dict().items()}}
    return ref


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _single_process(tmp_path_factory.mktemp("single"))


@pytest.mark.parametrize("nproc", [2, 3])
def test_ddp_run_equals_single_process_with_uneven_batches_and_augmentation(tmp_path, single, nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(nproc)]
    assert not single["b7"]["diverged"] and not single["b4"]["diverged"] and single["nan"]["diverged"]
    for name in ("b7", "b4"):
        for seen in ranks:
            assert not seen[name]["diverged"]
            for k, w in single[name]["weights"].items():  # the single process's network, on every rank
                assert (seen[name]["weights"][k] - w).abs().max() <= 1e-5, (nproc, name, k)
            assert seen[name]["train_loss"] == pytest.approx(single[name]["train_loss"], abs=1e-5)
    for seen in ranks:  # recorded diverged on every rank, the NaN weights' check did not raise
        assert seen["nan"]["diverged"] is True
        assert seen["batch_mean"][0] == pytest.approx(sum(range(1, nproc + 1)) / 10)
        assert seen["batch_mean"][1] != seen["batch_mean"][1]  # NaN
        assert seen["differing_caught"] is True
        assert "BatchNorm needs at least 2 per rank" in seen["bn_refused"]
        assert "\n" not in seen["bn_refused"]
    assert not (tmp_path / "bn").exists()  # refused before anything was written


def test_ddp_batch_problem_refuses_batchnorm_shares_below_two():
    import torch.nn as nn

    from jackpot.train.loop import ddp_batch_problem
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert "some rank gets 0" in ddp_batch_problem(bn, 50, 7, 3)  # last batch: 1 example
    assert "some rank gets 1" in ddp_batch_problem(bn, 50, 4, 2)  # last batch: 2 examples
    assert ddp_batch_problem(bn, 50, 4, 1) is None  # one process: unchanged
    assert ddp_batch_problem(bn, 50, 10, 2) is None  # 5 per rank
    assert ddp_batch_problem(nn.Linear(4, 4), 50, 7, 3) is None  # no BatchNorm: empty shares are fine


@pytest.fixture
def fake_cuda(monkeypatch):
    """ddp.init on a machine with `count` visible GPUs, its group calls recorded, not made."""
    import torch.distributed as dist
    calls = {"set_device": [], "init": []}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NNODES",
                 "SLURM_JOB_NUM_NODES", "GROUP_WORLD_SIZE", "NNODES", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "x")  # recorded, so the test's changes are undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)

    def init_process_group(backend=None, *, rank=-1, world_size=-1, device_id=None):  # torch >= 2.3's signature
        calls["init"].append(((backend,), {"rank": rank, "world_size": world_size, "device_id": device_id}))

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    return calls


def test_ddp_init_uses_the_visible_gpu_and_passes_device_id(fake_cuda, monkeypatch):
    """srun with one visible GPU per task: local rank 3 is cuda:0, not the missing cuda:3."""
    from jackpot.launch import ddp
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "3")
    monkeypatch.setenv("SLURM_NNODES", "1")
    env, device = ddp.init()
    assert env.rank == 3 and env.local_rank == 3 and device == torch.device("cuda:0")
    assert fake_cuda["set_device"] == [torch.device("cuda:0")]
    (args, kwargs), = fake_cuda["init"]
    assert args == ("nccl",) and kwargs["device_id"] == torch.device("cuda:0") and kwargs["rank"] == 3
    assert os.environ["MASTER_ADDR"] == "127.0.0.1"  # one node: rank 0 is on this host
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ddp.init()[1] == torch.device("cuda:1")
    assert fake_cuda["init"][-1][1]["device_id"] == torch.device("cuda:1")


@pytest.mark.parametrize("nodes", [{"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_NNODES": "2"},
                                   {"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2"},
                                   {"RANK": "1", "WORLD_SIZE": "8", "GROUP_WORLD_SIZE": "2"},
                                   {"RANK": "1", "WORLD_SIZE": "8", "NNODES": "2"}])
def test_ddp_init_refuses_multi_node_without_master_addr(fake_cuda, monkeypatch, nodes):
    from jackpot.errors import JackpotError
    from jackpot.launch import ddp
    for k, v in nodes.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(JackpotError, match="multi-node run needs MASTER_ADDR") as e:
        ddp.init()
    assert "\n" not in str(e.value) and fake_cuda["init"] == [] and "MASTER_ADDR" not in os.environ
    monkeypatch.setenv("MASTER_ADDR", "node0")  # given: joins
    ddp.init()
    assert len(fake_cuda["init"]) == 1 and os.environ["MASTER_ADDR"] == "node0"


def test_ddp_shutdown_leaves_the_process_group(tmp_path):
    import torch.distributed as dist

    from jackpot.launch import ddp
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    ddp.shutdown()
    assert not dist.is_initialized()
    ddp.shutdown()  # nothing joined: a no-op


def test_convnets_pool_with_a_mean_not_adaptive_avg_pool(monkeypatch):
    """The convnets' global average pool is a mean over H and W, with AdaptiveAvgPool2d(1)'s numbers
    on CPU, and never calls adaptive_avg_pool2d (its CUDA backward is not deterministic)."""
    import torch.nn.functional as F

    from jackpot.models.registry import create_model
    real_pool, real_mean = F.adaptive_avg_pool2d, torch.Tensor.mean
    means = []

    def spy(self, *args, **kwargs):
        out = real_mean(self, *args, **kwargs)
        if kwargs.get("dim", args[0] if args else None) == (2, 3):
            means.append((self.detach(), out.detach()))
        return out

    monkeypatch.setattr(F, "adaptive_avg_pool2d", lambda *a, **k: pytest.fail("adaptive_avg_pool2d called"))
    monkeypatch.setattr(torch.Tensor, "mean", spy)
    for name, shape, width in [("resnet-20", (3, 16, 16), 1.0), ("vgg-11", (3, 32, 32), 0.25),
                               ("wrn-22-2", (3, 16, 16), 0.5), ("resnet-18", (3, 64, 64), 0.25)]:
        torch.manual_seed(0)
        model = create_model(name, shape, 10, width=width)
        assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules()), name
        means.clear()
        model(torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        (features, pooled), = means
        assert features.shape[2:] != (1, 1)  # a real spatial map was pooled
        assert (pooled - real_pool(features, 1).flatten(1)).abs().max() <= 1e-6, name


if __name__ == "__main__":
    _worker(sys.argv[1])
