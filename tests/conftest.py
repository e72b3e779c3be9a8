import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def write_tiny_npz(path):
    """A small learnable 4-class problem in the npz format users bring (written, not downloaded)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 20)) * 2
    y = rng.integers(0, 4, size=300)
    x = centers[y] + rng.normal(size=(300, 20))
    np.savez(path, x_train=x[:240].astype(np.float32), y_train=y[:240], x_test=x[240:].astype(np.float32),
             y_test=y[240:])
    return path


@pytest.fixture
def tiny_npz(tmp_path):
    return write_tiny_npz(tmp_path / "tiny.npz")


@pytest.fixture
def interrupt_at(monkeypatch):
    """interrupt_at(step): the next training stage to reach `step` stops there as Ctrl-C (or a kill)
    would, once; call monkeypatch.undo() before resuming."""
    from jackpot.train import loop
    real, hit = loop.lr_at, []

    def arm(step: int) -> None:
        def lr_at(s, *a, **k):
            if s == step and not hit:
                hit.append(s)
                raise KeyboardInterrupt
            return real(s, *a, **k)
        monkeypatch.setattr(loop, "lr_at", lr_at)
    return arm


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv("JACKPOT_STORE", str(root))
    return root
