"""SLURM launcher through submitit (optional extra `jackpot[slurm]`): one job array per sweep
(`executor.map_array`), at most `workers` array tasks at once (`slurm_array_parallelism`), each
task calling the same `execute` as the local pool. A task that finds its run busy (computed by
another process) waits for it rather than handing it back. `cluster="local"` runs the array
with submitit's local executor (tests, laptops); that executor starts every task it is given at
once, so there the sweep hands it at most `workers` runs at a time. Without SLURM (no `sbatch`)
and without an explicit `cluster="local"`, the launcher refuses: submitit would silently run the
whole array on this machine at once."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import JackpotError
from .sweep import execute, log_event


class SlurmLauncher:
    wait_busy = True
    capacity = 10 ** 9  # everything goes into one array; SLURM schedules it

    def __init__(self, folder: str | Path, workers: int = 1, threads: int = 1, cluster: str | None = None,
                 partition: str | None = None, timeout_min: int = 240, gpus_per_task: int = 0,
                 mem_gb: float | None = None, poll: float = 5.0):
        try:
            import submitit
        except ImportError:
            raise JackpotError("--launcher slurm needs submitit: pip install 'jackpot[slurm]'") from None
        self.submitit = submitit
        self.folder = Path(folder)
        self.cluster = None if cluster in (None, "auto") else cluster
        if self.cluster != "local" and shutil.which("sbatch") is None:
            raise JackpotError("--launcher slurm: no SLURM on this machine (no sbatch on PATH); use "
                               "--launcher local, or --slurm-cluster local to run the job array here")
        self.note = ""
        if self.cluster == "local":  # submitit's local executor ignores slurm_array_parallelism
            self.capacity = max(1, workers)
            self.note = (f"no SLURM: submitit's local executor runs the array on this machine, "
                         f"{self.capacity} at a time (--workers)")
        self.params = {"timeout_min": timeout_min, "cpus_per_task": max(1, threads), "tasks_per_node": 1,
                       "nodes": 1, "slurm_array_parallelism": max(1, workers)}
        if gpus_per_task:
            self.params["gpus_per_node"] = gpus_per_task
        if mem_gb:
            self.params["mem_gb"] = mem_gb
        if partition:
            self.params["slurm_partition"] = partition
        self.poll = poll
        self.jobs: dict = {}
        self.arrays = 0

    def device_for(self, device: str, name: str) -> str:
        return "cuda" if device.startswith("cuda") else device

    def start(self) -> None:
        self.executor = self.submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        self.executor.update_parameters(**self.params)
        self._last_poll = 0.0

    def submit(self, jobs: list[dict]) -> None:
        submitted = self.executor.map_array(execute, jobs)
        self.arrays += 1
        if jobs:
            log_event(jobs[0]["sweep_dir"], event="array", cluster=self.executor.cluster,
                      job_ids=[j.job_id for j in submitted], runs=[j["name"] for j in jobs])
        for job, sjob in zip(jobs, submitted):
            self.jobs[sjob] = job["name"]

    def wait(self, timeout: float) -> list[dict]:
        time.sleep(timeout)
        if time.monotonic() - self._last_poll < self.poll and self.executor.cluster != "local":
            return []
        self._last_poll = time.monotonic()
        out = []
        for sjob, name in list(self.jobs.items()):
            if not sjob.done():
                continue
            del self.jobs[sjob]
            try:
                out.append(sjob.result())
            except Exception as e:  # noqa: BLE001 - the task died (timeout, node failure, preemption)
                out.append({"name": name, "status": "failed", "summary": f"{type(e).__name__}",
                            "error": f"SLURM task {sjob.job_id} failed: {e}"})
        return out

    def close(self, kill: bool = False) -> None:
        if kill and self.executor.cluster == "local":  # local jobs are this process's children
            for sjob in self.jobs:
                try:
                    sjob.cancel(check=False)
                except Exception:  # noqa: BLE001
                    pass
        # on a real cluster the array keeps going: a restarted sweep finds its runs busy or done
        self.jobs = {}
