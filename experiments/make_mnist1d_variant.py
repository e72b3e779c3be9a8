"""Write an MNIST-1D variant (another generation seed, more noise) as an npz file, with the official
generator (`pip install mnist1d`; it needs scipy, so use a separate environment):

    python experiments/make_mnist1d_variant.py OUT.npz [--seed=7] [--corr-noise=0.4] [--iid-noise=0.05]

The embedded default is seed 42, corr_noise_scale 0.25, iid_noise_scale 0.02.
"""
import sys

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset


def main() -> None:
    out = sys.argv[1]
    opts = dict(a.lstrip("-").split("=") for a in sys.argv[2:])
    args = get_dataset_args()
    args.seed = int(opts.get("seed", 7))
    args.corr_noise_scale = float(opts.get("corr-noise", 0.4))
    args.iid_noise_scale = float(opts.get("iid-noise", 0.05))
    d = make_dataset(args)
    np.savez_compressed(out, x_train=d["x"].astype(np.float32), y_train=d["y"], x_test=d["x_test"].astype(np.float32),
                        y_test=d["y_test"])
    print(f"{out}: seed {args.seed}, corr noise {args.corr_noise_scale}, iid noise {args.iid_noise_scale}, "
          f"{len(d['y'])}/{len(d['y_test'])} examples")


if __name__ == "__main__":
    main()
