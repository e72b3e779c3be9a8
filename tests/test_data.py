"""Data loading: shipped MNIST-1D, npz files, torchvision-layout readers, splits, augmentation."""
import gzip
import pickle
import sys
import time
import types

import numpy as np
import pytest
import torch

from jackpot.data import augment_batch, list_datasets, load_dataset
from jackpot.errors import JackpotError


# ---------- MNIST-1D (shipped) ----------

def test_mnist1d_default_loads_fast_and_normalised():
    load_dataset()  # warm imports so the timing measures loading only
    t0 = time.perf_counter()
    d = load_dataset("mnist1d")
    assert time.perf_counter() - t0 < 1.0
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.input_shape == (40,) and d.num_classes == 10 and d.augment is None
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(d.y_train.unique().tolist()) == set(range(10))
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3
    assert abs(d.x_test.mean().item()) < 0.2  # same distribution, train statistics
    assert "scipy" not in sys.modules


def test_list_datasets_names_and_descriptions():
    names = [n for n, _ in list_datasets()]
    assert names[:6] == ["mnist1d", "digits", "mnist", "fashion-mnist", "cifar10", "cifar100"]
    assert "npz:PATH" in names
    assert all(isinstance(d, str) and d and "\n" not in d for _, d in list_datasets())


def test_unknown_name_lists_valid_names():
    with pytest.raises(JackpotError, match="unknown dataset 'imagenet'.*mnist1d.*cifar10.*npz:PATH"):
        load_dataset("imagenet")


# ---------- validation split ----------

def test_validation_split_sizes_and_determinism():
    a = load_dataset("mnist1d", val_size=500, seed=3)
    b = load_dataset("mnist1d", val_size=500, seed=3)
    c = load_dataset("mnist1d", val_size=500, seed=4)
    assert a.x_train.shape == (3500, 40) and a.x_val.shape == (500, 40) and a.y_val.shape == (500,)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_val, c.y_val)
    assert set(a.evaluation_splits()) == {"test", "val"}
    # statistics come from the 3500 remaining training rows only
    assert abs(a.x_train.mean().item()) < 1e-4 and abs(a.x_train.std().item() - 1) < 1e-3
    full = load_dataset("mnist1d")
    assert full.x_val is None and set(full.evaluation_splits()) == {"test"}


@pytest.mark.parametrize("val_size", [4000, 5000, -1])
def test_validation_size_out_of_range(val_size):
    with pytest.raises(JackpotError, match="val_size"):
        load_dataset("mnist1d", val_size=val_size)


# ---------- digits (scikit-learn optional) ----------

def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` fail
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(JackpotError, match="pip install scikit-learn"):
        load_dataset("digits")


def test_digits_split_with_stub_sklearn(monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 17, size=(1797, 64)).astype(np.float64)
    target = np.arange(1797) % 10
    fake = types.ModuleType("sklearn.datasets")
    fake.load_digits = lambda: types.SimpleNamespace(data=data, target=target)
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    a, b = load_dataset("digits"), load_dataset("digits", seed=9)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.num_classes == 10 and torch.equal(a.y_test, b.y_test)  # split ignores the seed
    assert sorted(a.y_train.tolist() + a.y_test.tolist()) == sorted(target.tolist())


# ---------- npz files ----------

def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def _good_arrays(shape=(5,)):
    rng = np.random.default_rng(1)
    return dict(x_train=rng.normal(size=(30, *shape)).astype(np.float32), y_train=np.arange(30) % 3,
                x_test=rng.normal(size=(10, *shape)).astype(np.float32), y_test=np.arange(10) % 3)


def test_npz_round_trip_features(tmp_path):
    arrays = _good_arrays()
    d = load_dataset(_save_npz(tmp_path / "f.npz", **arrays))
    assert d.x_train.shape == (30, 5) and d.num_classes == 3
    assert torch.equal(d.y_test, torch.from_numpy(arrays["y_test"]).long())
    x = arrays["x_train"]
    expected = (x - x.mean()) / x.std(ddof=1)  # flat data: one global mean/std
    assert torch.allclose(d.x_train, torch.from_numpy(expected), atol=1e-5)


def test_npz_images_per_channel_and_uint8_scaled(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(20, 2, 4, 4), dtype=np.uint8)
    x[:, 1] //= 4  # channel 1 darker: per-channel stats must differ
    d = load_dataset(_save_npz(tmp_path / "i.npz", x_train=x, y_train=np.arange(20) % 4,
                               x_test=x[:6], y_test=np.arange(6) % 4), val_size=5)
    assert d.input_shape == (2, 4, 4) and d.num_classes == 4 and d.x_val.shape == (5, 2, 4, 4)
    assert d.x_train.dtype == torch.uint8  # pixels stay compact; the network sees them standardised
    per_channel_mean = d.inputs(d.x_train).mean(dim=(0, 2, 3))
    per_channel_std = d.inputs(d.x_train).std(dim=(0, 2, 3))
    assert torch.allclose(per_channel_mean, torch.zeros(2), atol=1e-5)
    assert torch.allclose(per_channel_std, torch.ones(2), atol=1e-4)


@pytest.mark.parametrize("breakage, message", [
    (lambda a: a.pop("y_test"), "lacks y_test"),
    (lambda a: a.update(y_train=np.arange(29) % 3), "30 rows but y_train has 29"),
    (lambda a: a.update(y_test=np.array([0, 1, 2, 3, 0, 1, 2, 0, 1, 2])), "y_test has label 3"),
    (lambda a: a.update(y_train=np.arange(30) % 3 - 1), "negative label"),
    (lambda a: a.update(y_train=np.zeros(30, dtype=np.float32)), "integer labels"),
    (lambda a: a.update(x_test=np.zeros((10, 6), np.float32)), "differ in shape"),
    (lambda a: a["x_train"].__setitem__((0, 0), np.nan), "NaN"),
])
def test_npz_bad_contents(tmp_path, breakage, message):
    arrays = _good_arrays()
    breakage(arrays)
    with pytest.raises(JackpotError, match=message):
        load_dataset(_save_npz(tmp_path / "bad.npz", **arrays))


def test_npz_missing_and_corrupt_files(tmp_path):
    with pytest.raises(JackpotError, match="npz file not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00\x01not a zip at all" * 10)
    with pytest.raises(JackpotError, match="corrupt npz"):
        load_dataset(f"npz:{garbage}")
    good = tmp_path / "good.npz"
    np.savez_compressed(good, **_good_arrays())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(JackpotError, match="corrupt npz"):
        load_dataset(f"npz:{truncated}")


# ---------- torchvision layouts: MNIST IDX, CIFAR pickles ----------

def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">i4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(root, folder, n_train=12, n_test=5, gz=True):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 7) % 10
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(arr)
            if gz:
                (raw / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(data))
            else:
                (raw / f"{prefix}-{kind}-ubyte").write_bytes(data)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("name, folder, gz", [("mnist", "MNIST", True), ("mnist", "MNIST", False),
                                              ("fashion-mnist", "FashionMNIST", True)])
def test_mnist_idx_files(tmp_path, name, folder, gz):
    written = _write_mnist(tmp_path, folder, gz=gz)
    d = load_dataset(name, root=str(tmp_path))
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.num_classes == 10 and d.augment is None
    assert d.y_train.tolist() == written["train"][1].tolist()
    # normalisation is an affine map of pixels/255: check ordering of pixel values is preserved
    img = written["train"][0][0].astype(np.float32) / 255
    got = d.inputs(d.x_train)[0, 0].numpy()
    mean, std = (written["train"][0] / 255).mean(), (written["train"][0] / 255).std(ddof=1)
    assert np.allclose(got, (img - mean) / std, atol=1e-4)


def test_idx_bad_magic(tmp_path):
    _write_mnist(tmp_path, "MNIST", gz=False)
    (tmp_path / "MNIST/raw/train-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 8)
    with pytest.raises(JackpotError, match="magic"):
        load_dataset("mnist", root=str(tmp_path))


def test_idx_truncated(tmp_path):
    _write_mnist(tmp_path, "MNIST", gz=False)
    path = tmp_path / "MNIST/raw/t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(JackpotError, match="header"):
        load_dataset("mnist", root=str(tmp_path))


def _write_cifar(root, name, n_per_file=4):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, classes = "cifar-10-batches-py", \
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        folder, files, key, classes = "cifar-100-python", ["train", "test"], b"fine_labels", 100
    base = root / folder
    base.mkdir(parents=True)
    labels_by_file = {}
    for i, fname in enumerate(files):
        data = rng.integers(0, 256, size=(n_per_file, 3072), dtype=np.uint8)
        labels = [(i * 13 + j * 31) % classes for j in range(n_per_file)]
        batch = {b"batch_label": b"fake", b"data": data, key: labels}
        if name == "cifar100":
            batch[b"coarse_labels"] = [0] * n_per_file
        with open(base / fname, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        labels_by_file[fname] = (data, labels)
    return labels_by_file


@pytest.mark.parametrize("name, n_train, classes", [("cifar10", 20, 10), ("cifar100", 4, 100)])
def test_cifar_pickles(tmp_path, name, n_train, classes):
    written = _write_cifar(tmp_path, name)
    d = load_dataset(name, root=str(tmp_path))
    assert d.x_train.shape == (n_train, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.num_classes == classes and d.augment == "crop-flip"
    test_file = "test_batch" if name == "cifar10" else "test"
    assert d.y_test.tolist() == written[test_file][1]
    # channel-major layout: first 1024 bytes of a row are the red plane
    first = written["data_batch_1" if name == "cifar10" else "train"][0][0]
    red = torch.from_numpy(first[:1024].reshape(32, 32).astype(np.float32))
    assert torch.corrcoef(torch.stack([red.flatten(), d.inputs(d.x_train)[0, 0].flatten()]))[0, 1] > 0.999
    assert torch.allclose(d.inputs(d.x_train).mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    _write_cifar(tmp_path, "cifar10")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py/test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(JackpotError, match="cannot read CIFAR batch"):
        load_dataset("cifar10", root=str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_missing_root_suggests_fetch(tmp_path, name):
    with pytest.raises(JackpotError, match=f"jackpot data fetch {name} --root"):
        load_dataset(name, root=str(tmp_path / "absent"))
    with pytest.raises(JackpotError, match=f"missing .*jackpot data fetch {name}"):
        load_dataset(name, root=str(tmp_path))  # root exists, files do not


def test_root_defaults_to_env(tmp_path, monkeypatch):
    _write_mnist(tmp_path, "MNIST")
    monkeypatch.setenv("JACKPOT_DATA", str(tmp_path))
    assert load_dataset("mnist").num_train == 12


# ---------- augmentation ----------

def test_crop_flip_deterministic_and_shape():
    x = torch.randn(16, 3, 32, 32)
    a = augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))
    b = augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))
    c = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment_batch(x, None, torch.Generator()) is x


def _reference_crop_flip(x, top, left, flip, pad=4):
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    out = padded[:, top:top + h, left:left + w]
    return out.flip(-1) if flip else out


def test_crop_flip_matches_hand_computed_offsets():
    # Recreate the draws the function makes from the same seed, then check each example by slicing.
    x = torch.arange(8 * 2 * 32 * 32, dtype=torch.float32).reshape(8, 2, 32, 32)
    out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    top, left = torch.randint(0, 9, (8,), generator=g), torch.randint(0, 9, (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    for i in range(8):
        assert torch.equal(out[i], _reference_crop_flip(x[i], top[i], left[i], bool(flip[i])))


def test_crop_flip_tiny_example_by_hand():
    # 1x1x2x2 image, pad 4 -> 10x10. Find a seed giving a pure flip with no shift, and one with
    # a shift that brings zero padding in, and check the pixels by hand.
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    seen_flip = seen_shift = False
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        top, left = torch.randint(0, 9, (1,), generator=g).item(), torch.randint(0, 9, (1,), generator=g).item()
        flip = torch.rand(1, generator=g).item() < 0.5
        out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(seed))[0, 0]
        if (top, left, flip) == (4, 4, True):
            assert out.tolist() == [[2.0, 1.0], [4.0, 3.0]]
            seen_flip = True
        if (top, left, flip) == (5, 3, False):  # down one, left one: only pixel 2 lands at (0, 1)
            assert out.tolist() == [[0.0, 3.0], [0.0, 0.0]]
            seen_shift = True
        if (top, left, flip) == (4, 4, False):
            assert torch.equal(out, x[0, 0])
    assert seen_flip and seen_shift


def test_crop_flip_flips_about_half():
    x = torch.arange(32, dtype=torch.float32).expand(400, 1, 32, 32).contiguous()
    out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))
    # a row of a flipped crop decreases left to right
    flipped = (out[:, 0, 16, 15] > out[:, 0, 16, 16]).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_augment_bad_input():
    with pytest.raises(JackpotError, match="unknown augmentation"):
        augment_batch(torch.zeros(1, 1, 4, 4), "mixup", torch.Generator())
    with pytest.raises(JackpotError, match=r"\(N, C, H, W\)"):
        augment_batch(torch.zeros(4, 40), "crop-flip", torch.Generator())


def test_pixel_sets_are_held_as_uint8_and_the_network_sees_the_same_bits(tmp_path):
    """Issue 15: CIFAR-shaped data kept as uint8 (a quarter of float32's memory); each batch scaled
    and standardised exactly as the whole set once was (numpy float32 /255, per-channel float64
    statistics, written out here)."""
    written = _write_cifar(tmp_path, "cifar10")
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.x_train.dtype == torch.uint8 and d.x_test.dtype == torch.uint8
    assert d.x_train.element_size() == 1  # a byte per value: 0.25x of the float32 it replaced
    raw = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    old = raw.astype(np.float32) / 255.0  # what the reader once stored
    od = old.astype(np.float64)
    mean = od.mean(axis=(0, 2, 3)).astype(np.float32).reshape(1, 3, 1, 1)
    std = od.std(axis=(0, 2, 3), ddof=1).astype(np.float32).reshape(1, 3, 1, 1)
    assert torch.equal(d.inputs(d.x_train), torch.from_numpy((old - mean) / std))
    assert torch.equal(d.inputs(d.x_train[3:7]), d.inputs(d.x_train)[3:7])  # batch by batch, the same bits
