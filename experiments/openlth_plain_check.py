"""Issue 10 (OpenLTH parity): two independent checks of `--recipe openlth-lenet-300-100`.

    python experiments/openlth_plain_check.py plain mnist5k.npz 20     # plain PyTorch, 20 seeds
    python experiments/openlth_plain_check.py replay RUN_DIR           # replay a jackpot run's level 0

`plain` trains LeNet-300-100 the OpenLTH way in plain PyTorch (kaiming-normal, SGD 0.1, batch 128,
5 epochs, OpenLTH's fixed MNIST normalisation) and prints the test accuracy after each epoch.
`replay` re-trains a jackpot run's dense level from its init.pt with jackpot's own batches in a
plain `torch.optim.SGD` loop and checks the final weights are bit-identical to the run's.
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)


def plain(npz: str, seeds: int) -> None:
    d = np.load(npz)
    norm = lambda x: (torch.tensor(x, dtype=torch.float32).reshape(len(x), -1) / 255 - 0.1307) / 0.3081
    xtr, ytr, xte, yte = norm(d["x_train"]), torch.tensor(d["y_train"]), norm(d["x_test"]), torch.tensor(d["y_test"])
    finals = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        accs = []
        for _ in range(5):
            perm = torch.randperm(len(xtr))
            for i in range(0, len(xtr), 128):
                idx = perm[i:i + 128]
                opt.zero_grad()
                F.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
                opt.step()
            with torch.no_grad():
                accs.append(round(100 * float((net(xte).argmax(1) == yte).float().mean()), 1))
        finals.append(accs[-1])
        print(seed, accs)
    print(f"final: mean {np.mean(finals):.2f} sd {np.std(finals, ddof=1):.2f} min {min(finals)} max {max(finals)}")


def replay(run_dir: str) -> None:
    from jackpot.procedures.context import RunContext
    from jackpot.store import Run, safe_torch_load
    from jackpot.train.loop import _Batches
    run = Run(run_dir)
    ctx = RunContext.attach(run)
    model = ctx.new_model(("init",))
    model.load_state_dict(safe_torch_load(run.stage("init.pt")))
    batches = _Batches(ctx.stage("level_00/ticket", model, None, 0, ctx.total_steps, "replay"), 0)
    opt = torch.optim.SGD(model.parameters(), lr=ctx.cfg.train.lr)
    for step in range(ctx.total_steps):
        x, y = batches.batch(step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    final = safe_torch_load(run.stage("level_00/ticket/final.pt"))
    diff = max(float((final[k] - v).abs().max()) for k, v in model.state_dict().items())
    with torch.no_grad():
        acc = float((model(ctx.dataset.x_test).argmax(1) == ctx.dataset.y_test).float().mean())
    print(f"test acc {100 * acc:.1f}%, max |weight difference| to the jackpot run: {diff}")


if __name__ == "__main__":
    plain(sys.argv[2], int(sys.argv[3])) if sys.argv[1] == "plain" else replay(sys.argv[2])
