"""DDP under torchrun with 2 gloo processes: masks and weights identical on both ranks after an
IMP prune and after a RigL update (with DDP-averaged dense gradients); only rank 0 writes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _worker(out: str) -> None:
    import torch.nn as nn
    import torch.nn.functional as F

    from jackpot.launch import ddp
    from jackpot.sparse import Masks, Sparsifier, prune, scores_magnitude
    from jackpot.sparse.dst import UpdateSchedule, make_method

    env, device = ddp.init()
    torch.set_num_threads(1)
    torch.manual_seed(100 + env.rank)  # different init on each rank: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    net = ddp.wrap(model, device)
    names = ["0.weight", "2.weight", "4.weight"]
    masks = Masks.ones_for(model, names)
    sparsifier = Sparsifier(model, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sparsifier.attach(opt)
    gen = torch.Generator().manual_seed(7 + env.rank)  # each rank its own data shard
    centers = torch.randn(4, 20, generator=torch.Generator().manual_seed(0)) * 2

    def step(t, callback=None):
        y = torch.randint(0, 4, (32,), generator=gen)
        x = centers[y] + torch.randn(32, 20, generator=gen)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()  # DDP all-reduces (averages) the dense gradients
        if callback is not None:
            callback.after_backward(t, net, sparsifier)
        opt.step()

    for t in range(5):
        step(t)
    # IMP: prune half of each layer by magnitude; rank 1 deliberately prunes differently, so the
    # result shows that rank 0's mask is the one every rank uses
    new = prune(scores_magnitude(model, sparsifier.masks), sparsifier.masks, 0.5 if env.rank == 0 else 0.3)
    sparsifier.set_masks(ddp.sync_masks(new))
    after_prune = {"masks": {n: m.clone() for n, m in sparsifier.masks.items()},
                   "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    rigl = ddp.MaskSync(make_method("rigl", UpdateSchedule(delta_t=4, alpha=0.3, t_end=100)))
    before_rigl = {n: m.clone() for n, m in sparsifier.masks.items()}
    for t in range(1, 7):  # an update at step 4
        step(t, rigl)
    changed = sum(int((before_rigl[n] != sparsifier.masks[n]).sum()) for n in names)
    torch.save({"after_prune": after_prune, "changed": changed, "history": rigl.history,
                "masks": {n: m.clone() for n, m in sparsifier.masks.items()},
                "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}},
               Path(out) / f"rank{env.rank}.pt")
    ddp.save_on_primary({"step": 6}, Path(out) / "checkpoint.pt")
    # the logged training loss of a stage is the whole batch's (batches of 7: shares of 4 and 3)
    from jackpot.train.loop import train_stage
    train_stage(_loss_stage(Path(out) / "stage"))
    ddp.shutdown()


def _loss_stage(path):
    """One epoch at LR 0 (the weights stay at their init, so every step's loss is the init
    network's loss on that batch) over 30 examples in batches of 7 (7, 7, 7, 7, 2)."""
    import torch.nn as nn

    from jackpot.config import TrainConfig
    from jackpot.data.dataset import Dataset
    from jackpot.train.loop import Stage
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (30,), generator=g)
    x = torch.randn(4, 20, generator=g)[y] * 2 + torch.randn(30, 20, generator=g)
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    return Stage(dir=path, model=model, dataset=Dataset("t", x, y, x[:10], y[:10], 4), train=TrainConfig(),
                 batch_size=7, order_seed=11, start=0, end=5, fixed_lr=0.0)


def test_ddp_masks_and_weights_identical_on_two_gloo_ranks(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           __file__, str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={
        **__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for key in ("masks", "weights"):
        for name in r0["after_prune"][key]:
            assert torch.equal(r0["after_prune"][key][name], r1["after_prune"][key][name]), (key, name)
        for name in r0[key]:
            assert torch.equal(r0[key][name], r1[key][name]), (key, name)
    # IMP pruned half of each layer (rank 0's fraction), RigL really moved weights at step 4
    m = r0["after_prune"]["masks"]["0.weight"]
    assert int(m.sum()) == m.numel() // 2
    assert r0["changed"] > 0 and [h["step"] for h in r0["history"]] == [4]
    # pruned weights are exactly zero on both ranks
    assert torch.all(r0["weights"]["2.weight"][~r0["masks"]["2.weight"]] == 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "rank0.pt", "rank1.pt", "stage"]
    # the logged train_loss is the mean over steps of the whole batch's loss, not rank 0's share
    import torch.nn.functional as F

    from jackpot.train.loop import _Batches
    stage = _loss_stage(tmp_path / "one-process")
    batches = _Batches(stage, 0)
    whole, share = [], []
    with torch.no_grad():
        for t in range(5):
            x, y = batches.batch(t)
            whole.append(float(F.cross_entropy(stage.model(x), y)))
            share.append(float(F.cross_entropy(stage.model(x[0::2]), y[0::2])))  # rank 0's share
    logged = [json.loads(l) for l in (tmp_path / "stage/metrics.jsonl").read_text().splitlines()][-1]["train_loss"]
    expected, rank0 = sum(whole) / 5, sum(share) / 5
    assert abs(expected - rank0) > 1e-2  # the two differ: the check tells them apart
    assert logged == pytest.approx(expected, abs=1e-6)


if __name__ == "__main__":
    _worker(sys.argv[1])
