"""`make demo`: a full lottery-ticket study on the embedded MNIST-1D data.

IMP on the MNIST-1D MLP down to 5% of its weights (45% pruned per level, 5 levels), with the
random-reinit and random-mask controls at every level, for 3 seeds run in 2 parallel processes. Prints the
table and writes the accuracy-vs-weights plot. Re-running it prints the stored results at once.
"""
from __future__ import annotations

import os
import sys
import time

from .cli import main as cli_main
from .procedures.lottery import PROCEDURE as LOTTERY

DEMO_ARGS = [LOTTERY.kind, "--dataset", "mnist1d", "--model", "mnist1d-mlp", "--optimizer", "adam",
             "--lr", "0.002", "--batch-size", "100", "--duration", "10ep", "--fraction", "0.45",
             "--levels", "5", "--seeds", "0,1,2", "--workers", "2", "--threads", "1", "--device", "cpu"]


def main() -> int:
    args = DEMO_ARGS + sys.argv[1:]
    print("jackpot demo: lottery tickets on MNIST-1D (4000 train / 1000 test sequences)")
    print("command: jackpot " + " ".join(args))
    print(f"results go to {os.environ.get('JACKPOT_STORE', 'runs')}/; progress below "
          "(one line per trained network)\n", flush=True)
    t0 = time.perf_counter()
    status = cli_main(args)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
