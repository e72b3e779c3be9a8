"""Ray launcher (optional extra `jackpot[ray]`): each run is one Ray task calling the same
`execute` as the local pool. Without --ray-address a local Ray cluster with `workers` CPUs is
started (and shut down at the end); with one, the sweep connects to that cluster, after checking
that the address answers (an address that does not answer is one line, nothing started)."""
from __future__ import annotations

import socket
import time

from ..errors import JackpotError
from .sweep import execute


def _check_address(address: str, timeout: float = 5.0) -> None:
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise JackpotError(f"--ray-address {address!r}: write HOST:PORT (e.g. 10.0.0.5:6379), "
                           f"ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise JackpotError(f"--ray-address {address}: no Ray cluster answers there "
                           f"({e.strerror or type(e).__name__})") from None


def import_ray():
    try:
        import ray
    except ImportError:
        raise JackpotError("--launcher ray needs Ray: pip install 'jackpot[ray]'") from None
    return ray


class RayLauncher:
    wait_busy = False

    def __init__(self, workers: int = 1, threads: int = 1, address: str | None = None):
        self.ray = import_ray()
        if address:
            _check_address(address)
        self.workers, self.threads, self.address = max(1, workers), max(1, threads), address
        # on an existing cluster Ray decides how many run at once; locally, `workers` at a time
        self.capacity = 10 ** 9 if address else self.workers
        self.refs: dict = {}
        self._started = False

    def device_for(self, device: str, name: str) -> str:
        return "cuda" if device.startswith("cuda") else device

    def start(self) -> None:
        ray = self.ray
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, ignore_reinit_error=True)
            else:
                ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, log_to_driver=False,
                         ignore_reinit_error=True)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            raise JackpotError(f"cannot start or reach Ray ({self.address or 'local'}): "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._started = True
        self.remote = ray.remote(num_cpus=self.threads, max_retries=0)(execute)

    def submit(self, jobs: list[dict]) -> None:
        for job in jobs:
            self.refs[self.remote.remote(job)] = job["name"]

    def wait(self, timeout: float) -> list[dict]:
        if not self.refs:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            name = self.refs.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except Exception as e:  # noqa: BLE001 - the task's worker died
                out.append({"name": name, "status": "failed", "summary": f"{type(e).__name__}",
                            "error": f"Ray task failed: {type(e).__name__}: {e}"})
        return out

    def close(self, kill: bool = False) -> None:
        if not self._started:
            return
        if kill:
            for ref in self.refs:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
        self.refs = {}
        self.ray.shutdown()
        self._started = False
