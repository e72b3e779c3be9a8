"""Files written whole or not at all, read back with one clear error: the floor every layer
may use (masks, checkpoints, records). Only rank 0 of a torch.distributed job writes."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import JackpotError


def is_primary() -> bool:
    """False on every rank but 0 of a torch.distributed job: only rank 0 writes to the store."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _umask() -> int:
    try:  # Linux reports it; reading it elsewhere means setting it, briefly, for every thread
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_message(e: OSError, path: Path) -> str:
    """One line for an OS-level failure to write `path`: full disk, read-only store, a file where
    a directory should be..."""
    code = e.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device: could not write {path}"
    if code == errno.EROFS:
        return f"read-only file system: cannot write {path}"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: cannot write {path}"
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        return f"cannot create {path}: {blocker} is a file, not a directory"
    return f"cannot write {path}: {e.strerror or e}"


@contextmanager
def writing(path: str | Path):
    """Turn OS-level write failures inside the block into one JackpotError naming `path`."""
    path = Path(path)
    try:
        yield path
    except OSError as e:
        raise JackpotError(_os_message(e, path)) from None
    except RuntimeError as e:  # torch.save reports a short write (full disk) this way
        if "inline_container" not in str(e) and "file write failed" not in str(e):
            raise
        try:
            free = f" ({shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MiB free there)"
        except OSError:
            free = ""
        raise JackpotError(f"no space left on device: could not write {path}{free}") from None


def make_dirs(path: str | Path) -> Path:
    with writing(path):
        Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


@contextmanager
def _atomic_path(path: str | Path):
    """Yield a temporary path in the same directory; rename it over `path` on success. The file
    gets the mode open() would give (0666 less the umask, not mkstemp's 0600): a store shared by a
    group stays readable."""
    path = Path(path)
    make_dirs(path.parent)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    try:
        with writing(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    if not is_primary():
        return
    with _atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj, path: str | Path) -> None:
    if not is_primary():
        return
    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


RECOMPUTE = "move it away and re-run to recompute that stage"


def safe_torch_load(path: str | Path, what: str = "checkpoint", advice: str = RECOMPUTE):
    """torch.load with weights_only=True; a missing or corrupt file is one clear JackpotError
    ending in `advice` (a run's own file: recompute it; a file the user names: what to give)."""
    path = Path(path)
    if not path.exists():
        raise JackpotError(f"missing {what}: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/garbled files
        raise JackpotError(f"corrupt {what} {path} ({type(e).__name__}); {advice}") from None


def read_json(path: str | Path, what: str = "file"):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise JackpotError(f"missing {what}: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JackpotError(f"corrupt {what}: {path}") from None
    except OSError as e:  # a directory in the way, no permission...
        raise JackpotError(f"cannot read {what} {path}: {e.strerror or e}") from None
