"""`jackpot data fetch` logic with a fake downloader: these tests never touch the network."""
import gzip
import hashlib
import io
import pickle
import tarfile
import urllib.error

import numpy as np
import socket

import pytest

from jackpot.data import fetch, fetch_dataset, load_dataset
from jackpot.errors import JackpotError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)  # no test reaches the network
    monkeypatch.setattr(fetch, "_download", refuse)


class FakeServer:
    """Stands in for `fetch._download`: serves bytes by file name and records requested URLs."""

    def __init__(self, files):
        self.files, self.calls = files, []

    def __call__(self, url, dest):
        self.calls.append(url)
        dest.write_bytes(self.files[url.rsplit("/", 1)[-1]])


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _idx(arr):
    return bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">i4").tobytes() + arr.astype(np.uint8).tobytes()


def _fake_mnist_files():
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 6), ("t10k", 3)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(
            _idx(rng.integers(0, 256, (n, 28, 28))))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(_idx(np.arange(n) % 10))
    return files


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    server = FakeServer({name: b"not the real file" for name in _fake_mnist_files()})
    monkeypatch.setattr(fetch, "_download", server)
    with pytest.raises(JackpotError, match="checksum mismatch.*train-images-idx3-ubyte.gz") as e:
        fetch_dataset("mnist", str(tmp_path), progress=lambda m: None)
    assert "\n" not in str(e.value)
    assert server.calls == ["https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"]
    assert list(tmp_path.iterdir()) == []  # no partial or temp files, no empty folders


def test_good_checksum_downloads_then_skips(tmp_path, monkeypatch):
    files = _fake_mnist_files()
    server = FakeServer(files)
    monkeypatch.setattr(fetch, "_download", server)
    for name, data in files.items():
        monkeypatch.setitem(fetch.EXPECTED_MD5, ("mnist", name), _md5(data))
    messages = []
    target = fetch_dataset("mnist", str(tmp_path), progress=messages.append)
    assert target == tmp_path / "MNIST/raw"
    assert sorted(p.name for p in target.iterdir()) == sorted(files)
    assert len(server.calls) == 4
    # fetched files load through the normal reader
    d = load_dataset("mnist", root=str(tmp_path))
    assert d.x_train.shape == (6, 1, 28, 28) and d.y_test.tolist() == [0, 1, 2]

    fetch_dataset("mnist", str(tmp_path), progress=messages.append)
    assert len(server.calls) == 4  # second call downloads nothing
    assert sum("skipping" in m for m in messages) == 4


def test_corrupted_local_file_is_downloaded_again(tmp_path, monkeypatch):
    files = _fake_mnist_files()
    server = FakeServer(files)
    monkeypatch.setattr(fetch, "_download", server)
    for name, data in files.items():
        monkeypatch.setitem(fetch.EXPECTED_MD5, ("mnist", name), _md5(data))
    fetch_dataset("mnist", str(tmp_path), progress=lambda m: None)
    (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    fetch_dataset("mnist", str(tmp_path), progress=lambda m: None)
    assert server.calls[-1].endswith("t10k-labels-idx1-ubyte.gz") and len(server.calls) == 5
    assert (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz").read_bytes() == files["t10k-labels-idx1-ubyte.gz"]


def test_network_failure_is_one_line_error(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")
    monkeypatch.setattr(fetch, "_download", offline)
    with pytest.raises(JackpotError, match="download of http://fashion-mnist.*failed") as e:
        fetch_dataset("fashion-mnist", str(tmp_path), progress=lambda m: None)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no empty folder of its own left behind
    with pytest.raises(JackpotError, match="failed"):  # a root it made is removed too
        fetch_dataset("mnist", str(tmp_path / "new" / "root"), progress=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def _cifar_tarball(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cifar10_members():
    members = {}
    for i, fname in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"data": np.full((2, 3072), i, np.uint8), b"labels": [i, 9 - i]}
        members[f"cifar-10-batches-py/{fname}"] = pickle.dumps(batch, protocol=2)
    members["cifar-10-batches-py/batches.meta"] = b"meta"
    return members


def test_cifar_tarball_fetch_extract_load_and_skip(tmp_path, monkeypatch):
    blob = _cifar_tarball(_cifar10_members())
    server = FakeServer({"cifar-10-python.tar.gz": blob})
    monkeypatch.setattr(fetch, "_download", server)
    monkeypatch.setitem(fetch.EXPECTED_MD5, ("cifar10", "cifar-10-python.tar.gz"), _md5(blob))
    target = fetch_dataset("cifar10", str(tmp_path), progress=lambda m: None)
    assert target == tmp_path / "cifar-10-batches-py" and (target / "test_batch").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs cleaned up
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.x_train.shape == (10, 3, 32, 32) and d.y_test.tolist() == [5, 4]
    fetch_dataset("cifar10", str(tmp_path), progress=lambda m: None)
    assert server.calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]


@pytest.mark.parametrize("bad_name", ["../escape", "/abs/path"])
def test_unsafe_tarball_is_refused(tmp_path, monkeypatch, bad_name):
    members = _cifar10_members()
    members[bad_name] = b"x"
    blob = _cifar_tarball(members)
    monkeypatch.setattr(fetch, "_download", FakeServer({"cifar-10-python.tar.gz": blob}))
    monkeypatch.setitem(fetch.EXPECTED_MD5, ("cifar10", "cifar-10-python.tar.gz"), _md5(blob))
    root = tmp_path / "root"
    with pytest.raises(JackpotError, match="unsafe entry"):
        fetch_dataset("cifar10", str(root), progress=lambda m: None)
    assert not (tmp_path / "escape").exists() and not (root / "cifar-10-batches-py").exists()


def test_symlink_in_tarball_is_refused(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-100-python/train")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    blob = buf.getvalue()
    monkeypatch.setattr(fetch, "_download", FakeServer({"cifar-100-python.tar.gz": blob}))
    monkeypatch.setitem(fetch.EXPECTED_MD5, ("cifar100", "cifar-100-python.tar.gz"), _md5(blob))
    with pytest.raises(JackpotError, match="unsafe entry"):
        fetch_dataset("cifar100", str(tmp_path), progress=lambda m: None)


def test_builtin_datasets_need_no_fetch(tmp_path):
    messages = []
    for name in ("mnist1d", "digits"):
        fetch_dataset(name, str(tmp_path / "r"), progress=messages.append)
    assert len(messages) == 2 and all("nothing to fetch" in m for m in messages)
    assert not (tmp_path / "r").exists()


def test_fetch_unknown_name(tmp_path):
    with pytest.raises(JackpotError, match="unknown dataset 'svhn'.*cifar10.*mnist"):
        fetch_dataset("svhn", str(tmp_path))


def test_md5_table_covers_every_download():
    for name, src in fetch.SOURCES.items():
        names = src["files"] if src["kind"] == "files" else [src["archive"]]
        for fname in names:
            assert len(fetch.EXPECTED_MD5[(name, fname)]) == 32


def test_fetch_root_defaults_to_env(tmp_path, monkeypatch):
    files = _fake_mnist_files()
    monkeypatch.setattr(fetch, "_download", FakeServer(files))
    for name, data in files.items():
        monkeypatch.setitem(fetch.EXPECTED_MD5, ("fashion-mnist", name), _md5(data))
    monkeypatch.setenv("JACKPOT_DATA", str(tmp_path))
    assert fetch_dataset("fashion-mnist", None, progress=lambda m: None) == tmp_path / "FashionMNIST/raw"
    assert load_dataset("fashion-mnist").num_train == 6
