"""`jackpot data fetch`: download standard datasets into torchvision's on-disk layout, md5-checked."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

from jackpot.errors import JackpotError

_MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# Where each dataset comes from. "files": plain files into `dir`; "tar": one archive into root.
SOURCES: dict[str, dict] = {
    "mnist": {"kind": "files", "dir": "MNIST/raw",
              "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
              "files": [f"{s}.gz" for s in _MNIST_STEMS]},
    "fashion-mnist": {"kind": "files", "dir": "FashionMNIST/raw",
                      "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
                      "files": [f"{s}.gz" for s in _MNIST_STEMS]},
    "cifar10": {"kind": "tar", "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "archive": "cifar-10-python.tar.gz", "folder": "cifar-10-batches-py",
                "expect": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]},
    "cifar100": {"kind": "tar", "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "archive": "cifar-100-python.tar.gz", "folder": "cifar-100-python",
                 "expect": ["train", "test"]},
}
NOTHING_TO_FETCH = ("mnist1d", "digits")

# The md5s torchvision checks (torchvision.datasets.MNIST/FashionMNIST.resources, CIFAR10/100.tgz_md5).
# Keyed by (dataset, file name) because MNIST and Fashion-MNIST share file names.
EXPECTED_MD5: dict[tuple[str, str], str] = {
    ("mnist", "train-images-idx3-ubyte.gz"): "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ("mnist", "train-labels-idx1-ubyte.gz"): "d53e105ee54ea40749a09fcbcd1e9432",
    ("mnist", "t10k-images-idx3-ubyte.gz"): "9fb629c4189551a2d022fa330f9573f3",
    ("mnist", "t10k-labels-idx1-ubyte.gz"): "ec29112dd5afa0611ce80d1b7f02629c",
    ("fashion-mnist", "train-images-idx3-ubyte.gz"): "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ("fashion-mnist", "train-labels-idx1-ubyte.gz"): "25c81989df183df01b3e8a0aad5dffbe",
    ("fashion-mnist", "t10k-images-idx3-ubyte.gz"): "bef4ecab320f06d8554ea6380940ec79",
    ("fashion-mnist", "t10k-labels-idx1-ubyte.gz"): "bb300cfdad3c16e7a12a480ee83cd310",
    ("cifar10", "cifar-10-python.tar.gz"): "c58f30108f718f92721af3b95e74349a",
    ("cifar100", "cifar-100-python.tar.gz"): "eb9058c3a382ffc7106e4002c42a8d85",
}
_NET_ERRORS = (OSError, http.client.HTTPException, ValueError)  # URLError/timeouts are OSErrors


def _download(url: str, dest: Path) -> None:
    """Stream `url` into `dest`. Module-level so tests can monkeypatch it and stay offline."""
    req = urllib.request.Request(url, headers={"User-Agent": "jackpot-data-fetch"})
    with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, length=1 << 20)


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def fetch_file(urls: list[str], dest: Path, md5: str, progress: Callable[[str], None]) -> bool:
    """Make `dest` exist with checksum `md5`. Returns False when it was already there (skipped)."""
    if dest.is_file():
        if md5sum(dest) == md5:
            progress(f"{dest} already present (checksum ok), skipping")
            return False
        progress(f"{dest} has a wrong checksum, downloading again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failure = ""
    for url in urls:
        # Temp file in the same directory so the final rename is atomic: no half files under dest.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            progress(f"downloading {url}")
            try:
                _download(url, tmp)
            except _NET_ERRORS as e:
                failure = f"download of {url} failed ({_one_line(e)}); check the network or proxy"
                continue
            got = md5sum(tmp)
            if got != md5:
                failure = f"checksum mismatch for {url}: expected md5 {md5}, got {got}"
                continue
            os.replace(tmp, dest)
            return True
        finally:
            tmp.unlink(missing_ok=True)
    raise JackpotError(failure)


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Only plain files and directories with relative paths that stay inside the target."""
    members = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise JackpotError(f"refusing to extract unsafe entry {m.name!r} from {archive}")
        members.append(m)
    return members


def extract_tar(archive: Path, root: Path, folder: str) -> None:
    """Extract `archive` (which contains `folder/`) into root via a temp dir, then move into place."""
    tmp_dir = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _safe_members(tar, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp_dir, members=members, filter="data")
                else:  # Python without extraction filters: members were vetted above
                    tar.extractall(tmp_dir, members=members)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise JackpotError(f"cannot extract {archive}: {_one_line(e)}") from None
        src = tmp_dir / folder
        if not src.is_dir():
            raise JackpotError(f"archive {archive} does not contain the folder {folder}/")
        dest = root / folder
        dest.mkdir(exist_ok=True)
        for item in src.iterdir():
            os.replace(item, dest / item.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def default_root() -> Path:
    """$JACKPOT_DATA, else ~/.jackpot/data (read at call time, not import time)."""
    return Path(os.environ.get("JACKPOT_DATA") or "~/.jackpot/data").expanduser()


def fetch_dataset(name: str, root: str | None = None, progress: Callable[[str], None] = print) -> Path:
    """Download `name` under `root` (None: $JACKPOT_DATA or ~/.jackpot/data) in torchvision's
    layout; return the folder holding its files."""
    key = name.strip().lower()
    root_path = Path(root).expanduser() if root is not None else default_root()
    if key in NOTHING_TO_FETCH or key.startswith("npz:"):
        progress(f"'{name}' needs no download: nothing to fetch")
        return root_path
    if key not in SOURCES:
        valid = ", ".join(sorted(list(SOURCES) + list(NOTHING_TO_FETCH)))
        raise JackpotError(f"cannot fetch unknown dataset '{name}'; valid names: {valid}")
    src = SOURCES[key]
    made = _missing_dirs(root_path / src.get("dir", src.get("folder", "")))
    try:
        root_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JackpotError(f"cannot create data directory {root_path}: {_one_line(e)}") from None
    try:
        return _fetch_into(name, key, src, root_path, progress)
    except JackpotError:  # a failed fetch leaves no empty folder it made behind
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty: a partial download stays to be resumed or checked
        raise


def _missing_dirs(path: Path) -> list[Path]:
    """The folders on the way to `path` that do not exist yet, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _fetch_into(name: str, key: str, src: dict, root_path: Path, progress) -> Path:
    if src["kind"] == "files":
        target = root_path / src["dir"]
        for fname in src["files"]:
            fetch_file([m + fname for m in src["mirrors"]], target / fname,
                       EXPECTED_MD5[(key, fname)], progress)
        progress(f"{name} ready in {target}")
        return target

    target = root_path / src["folder"]
    if all((target / f).is_file() for f in src["expect"]):
        progress(f"{target} already extracted, skipping")
        return target
    archive = root_path / src["archive"]
    fetch_file([src["url"]], archive, EXPECTED_MD5[(key, src["archive"])], progress)
    progress(f"extracting {archive}")
    extract_tar(archive, root_path, src["folder"])
    missing = [f for f in src["expect"] if not (target / f).is_file()]
    if missing:
        raise JackpotError(f"archive {archive} lacks {', '.join(missing)}")
    progress(f"{name} ready in {target}")
    return target
