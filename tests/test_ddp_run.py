"""One jackpot run on 2 processes under torchrun (gloo, CPU): the whole command works, only rank 0
writes, and the loop's end-of-stage check proves weights and masks identical on both ranks."""
import json
import subprocess
import sys

import torch


def torchrun(*args, store):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "jackpot.cli", *args, "--device", "cpu", "--threads", "1", "--store", str(store)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def test_lottery_and_rigl_under_torchrun(tiny_npz, tmp_path):
    store = tmp_path / "store"
    common = ["--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40", "--duration", "2ep"]
    proc = torchrun("lottery", *common, "--fraction", "0.5", "--levels", "1", store=store)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("| 1 | 50.0% |") == 1  # the table is printed once, by rank 0
    proc = torchrun("sparse", *common, "--method", "rigl", "--density", "0.2", "--delta-t", "3", store=store)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (lottery,) = store.glob("lottery-*")
    (sparse,) = store.glob("sparse-*")
    for stage in (lottery / "level_01/ticket", sparse / "train"):
        record = json.loads((stage / "done.json").read_text())
        assert record["final"]["test_acc"] > 0.5
        lines = (stage / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == len({json.loads(l)["step"] for l in lines})  # one writer: no duplicate lines
    start, end = torch.load(sparse / "mask_init.pt", weights_only=True), torch.load(sparse / "train/mask.pt", weights_only=True)
    assert {n: int(m.sum()) for n, m in start.items()} == {n: int(m.sum()) for n, m in end.items()}
    assert any(not torch.equal(start[n], end[n]) for n in start)  # RigL changed the masks, in sync


def test_two_processes_train_the_same_network_as_one(tiny_npz, tmp_path):
    """Each rank takes half of every batch and DDP averages the gradients: the result equals the
    single-process run up to float summation order."""
    args = ["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "2ep", "--method", "set", "--density", "0.2", "--delta-t", "3"]
    assert torchrun(*args, store=tmp_path / "ddp").returncode == 0
    single = subprocess.run([sys.executable, "-m", "jackpot.cli", *args, "--device", "cpu", "--threads", "1",
                             "--store", str(tmp_path / "one")], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    (a,), (b,) = (tmp_path / "ddp").glob("sparse-*"), (tmp_path / "one").glob("sparse-*")
    wa, wb = (torch.load(p / "train/final.pt", weights_only=True) for p in (a, b))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert all(torch.equal(x, y) for x, y in zip(torch.load(a / "train/mask.pt", weights_only=True).values(),
                                                 torch.load(b / "train/mask.pt", weights_only=True).values()))
