"""Scoring time per pruning-at-initialisation method (1 thread, median of interleaved repetitions),
on the MNIST-1D MLP and on ResNet-20 (CIFAR shape), one batch of 100 scoring examples.
Reported in milliseconds and as a ratio to one SGD training step on the same batch."""
from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from common import interleaved_ratio, setup_threads
from jackpot.models import create_model
from jackpot.sparse import Masks, prunable_names
from jackpot.sparse.scores import SCORES, compute_scores

CASES = [("mnist1d-mlp", (40,), 10, 7), ("resnet-20", (3, 32, 32), 3, 1)]


def main(quick: bool = False) -> list[dict]:
    setup_threads(1)
    out = []
    for name, shape, rounds, reps in CASES:
        torch.manual_seed(0)
        model = create_model(name, shape, 10)
        masks = Masks.ones_for(model, prunable_names(model))
        batch = [(torch.randn(100, *shape), torch.randint(0, 10, (100,)))]
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)

        def step():
            opt.zero_grad()
            F.cross_entropy(model(batch[0][0]), batch[0][1]).backward()
            opt.step()
        candidates = {"train step": step}
        for score in SCORES:
            candidates[score] = (lambda s=score: compute_scores(s, model, masks, batch, generator=g, input_shape=shape))
        res = interleaved_ratio(candidates, "train step", max(2, rounds // 2) if quick else rounds, reps)
        for score in SCORES:
            r = res[score]
            out.append({"model": name, "score": score, "seconds": r["seconds"], "x_train_step": r["ratio"]})
            print(f"scoring {name:<12} {score:<26} {1e3 * r['seconds']:8.1f} ms  "
                  f"({r['ratio']:.2f}x one training step of batch 100)", flush=True)
    return out


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv), indent=1))
