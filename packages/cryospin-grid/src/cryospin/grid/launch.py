"""Launching a grid's runs: locally (one after another or ``--jobs N`` at a time) or on SLURM.

Launchers:

* ``local``: each run is a subprocess ``python -m cryospin.grid.worker RUN_DIR`` (so its
  peak memory is its own), ``jobs`` of them at a time; output goes to ``RUN_DIR/grid.log``.
* ``slurm``: each run is one task of a submitit job array (``submitit.AutoExecutor``) with the
  partition, time limit, GPUs, CPUs and memory of :class:`SlurmOptions`; ``jobs`` caps the array's
  parallelism. A task that reaches its time limit or is pre-empted requeues itself and resumes
  from its checkpoint (submitit checkpointing). ``SlurmOptions.cluster = "local"`` runs the same
  path through submitit's local executor (tests, workstations).
* ``inline``: in this process, one after another (debugging and tests; the reported peak memory
  then grows over the grid).

Finished runs (``summary.json``) are skipped; interrupted ones resume from their checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryospin.core.atomic import atomic_write_text
from cryospin.core.errors import ConfigError
from cryospin.grid.runs import (
    LOG_FILE,
    execute_point,
    last_error,
    python,
    record_error,
    run_state,
)

#: worker exit status -> outcome
EXIT_STATES = {0: "done", 3: "stopped", 130: "interrupted", 2: "failed", 1: "failed"}
LAUNCHERS = ("local", "slurm", "inline")


@dataclass
class SlurmOptions:
    """Resources of each SLURM task (submitit parameter names in brackets)."""

    partition: str | None = None  # slurm_partition
    time_min: int = 60  # timeout_min
    gpus_per_node: int = 0  # gpus_per_node
    cpus_per_task: int = 2  # cpus_per_task
    mem_gb: float | None = None  # mem_gb
    extra: dict[str, Any] = field(default_factory=dict)  # slurm_additional_parameters
    cluster: str = "slurm"  # submitit cluster: "slurm", or "local"/"debug" (tests, workstations)
    wait: bool = True  # wait for the jobs and report their outcome


def parse_time(text: str | int) -> int:
    """SLURM ``--time`` -> whole minutes (seconds rounded up; at least 1).

    Formats as sbatch: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``.
    """
    s = str(text).strip()
    bad = ConfigError(f"--time {text!r}: expected M, M:S, H:M:S, D-H, D-H:M or D-H:M:S")
    try:
        if "-" in s:
            d, rest = s.split("-", 1)
            parts = [int(p) for p in rest.split(":")]
            if len(parts) > 3:
                raise bad
            h, m, sec = (parts + [0, 0])[:3]
            total_s = ((int(d) * 24 + h) * 60 + m) * 60 + sec
        else:
            parts = [int(p) for p in s.split(":")]
            if len(parts) == 1:
                total_s = parts[0] * 60
            elif len(parts) == 2:
                total_s = parts[0] * 60 + parts[1]
            elif len(parts) == 3:
                total_s = (parts[0] * 60 + parts[1]) * 60 + parts[2]
            else:
                raise bad
    except ValueError:
        raise bad from None
    if min(parts) < 0:
        raise bad
    return max(1, -(-total_s // 60))


Report = Callable[[Path, str, float], None]


def _quiet(run_dir: Path, state: str, seconds: float) -> None:
    return None


def launch_inline(
    dirs: list[Path], report: Report = _quiet, console: Any = None
) -> dict[Path, str]:
    """Run the folders one after another in this process; stop at an interruption."""
    states: dict[Path, str] = {}
    for d in dirs:
        t0 = time.perf_counter()
        try:
            state = execute_point(d, console=console)
        except Exception:
            state = "failed"
        states[d] = state
        report(d, state, time.perf_counter() - t0)
        if state == "interrupted":
            break
    return states


def worker_env(
    jobs: int, cores: int | None = None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment of a local worker: the cores shared out among ``jobs`` concurrent runs.

    Sets ``OMP_NUM_THREADS`` to ``max(1, cores // jobs)`` (``cores``: this process's CPU
    affinity) unless the environment already sets it; a run's own ``num_threads`` still wins.
    Without it every run would start one thread per core, and oversubscribed OpenMP threads slow
    training many-fold (measured here: 27 instead of 550 images/s).
    """
    env = dict(os.environ if environ is None else environ, PYTHONUNBUFFERED="1")
    if "OMP_NUM_THREADS" not in env:
        n = len(os.sched_getaffinity(0)) if cores is None else cores
        env["OMP_NUM_THREADS"] = str(max(1, n // max(1, jobs)))
    return env


def _subprocess(run_dir: Path, jobs: int) -> str:
    env = worker_env(jobs)
    with (run_dir / LOG_FILE).open("a") as log:
        log.write(f"=== cryospin grid: {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        rc = subprocess.run(
            [python(), "-m", "cryospin.grid.worker", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    state = EXIT_STATES.get(rc, "failed")
    if state == "failed" and not last_error(run_dir):
        record_error(run_dir, f"worker exited with status {rc}")
    return state


def launch_local(dirs: list[Path], jobs: int = 1, report: Report = _quiet) -> dict[Path, str]:
    """Run each folder in its own subprocess, ``jobs`` at a time.

    Ctrl-C reaches the running workers too (same process group): they checkpoint and stop, and
    no further run starts.
    """
    states: dict[Path, str] = {}
    stop = False

    def one(d: Path) -> str:
        if stop:
            return "skipped"
        t0 = time.perf_counter()
        state = _subprocess(d, jobs)
        report(d, state, time.perf_counter() - t0)
        return state

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {d: pool.submit(one, d) for d in dirs}
        try:
            for d, fut in futures.items():
                states[d] = fut.result()
                if states[d] == "interrupted":
                    stop = True
        except KeyboardInterrupt:
            stop = True
            for fut in futures.values():
                fut.cancel()
            for d, fut in futures.items():
                if not fut.cancelled():
                    states[d] = fut.result()
    return {d: s for d, s in states.items() if s != "skipped"}


class PointJob:
    """The submitit callable: run one folder; requeue itself on timeout or pre-emption."""

    def __call__(self, run_dir: str) -> str:
        """Run or resume the point in ``run_dir``."""
        return execute_point(Path(run_dir))

    def checkpoint(self, run_dir: str) -> Any:
        """Submitit hook: resubmit; the new task resumes from the run's last checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, run_dir)


def slurm_executor(folder: Path, opts: SlurmOptions, jobs: int) -> Any:
    """Return a configured ``submitit.AutoExecutor`` (logs in ``folder``)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install 'cryospin[slurm]' (or submitit)"
        ) from None
    try:
        executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=opts.cluster)
    except RuntimeError as exc:  # no srun/sbatch here
        raise ConfigError(f"--launcher slurm: {exc}".splitlines()[0]) from None
    params: dict[str, Any] = {
        "name": "cryospin-grid",
        "timeout_min": opts.time_min,
        "gpus_per_node": opts.gpus_per_node,
        "cpus_per_task": opts.cpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_array_parallelism": max(1, jobs),
    }
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.extra:
        params["slurm_additional_parameters"] = dict(opts.extra)
    executor.update_parameters(**params)
    return executor


def launch_slurm(
    dirs: list[Path],
    out: Path,
    opts: SlurmOptions,
    jobs: int = 1,
    report: Report = _quiet,
    poll_s: float = 2.0,
    echo: Callable[[str], None] = print,
    executor: Any = None,
) -> dict[Path, str]:
    """Submit the folders as one job array; with ``opts.wait`` wait and collect the outcomes.

    ``executor`` (from :func:`slurm_executor`) may be made beforehand, to fail early off SLURM.
    """
    if not dirs:
        return {}
    if executor is None:
        executor = slurm_executor(Path(out) / "slurm", opts, jobs)
    job_list = executor.map_array(PointJob(), [str(d) for d in dirs])
    ids = {str(d): j.job_id for d, j in zip(dirs, job_list, strict=True)}
    atomic_write_text(Path(out) / "slurm" / "jobs.json", json.dumps(ids, indent=2) + "\n")
    echo(
        f"submitted {len(job_list)} job(s): {job_list[0].job_id}"
        + (f" .. {job_list[-1].job_id}" if len(job_list) > 1 else "")
        + f"; logs in {Path(out) / 'slurm'}"
    )
    if not opts.wait:
        return {d: "submitted" for d in dirs}
    t0 = time.perf_counter()
    pending = dict(zip(dirs, job_list, strict=True))
    states: dict[Path, str] = {}
    while pending:
        for d, job in list(pending.items()):
            if not job.done():
                continue
            try:
                state = job.result()
            except Exception:
                state = "failed" if run_state(d) != "done" else "done"
                if state == "failed" and not last_error(d):
                    record_error(d, f"submitit job {job.job_id} failed; see {Path(out) / 'slurm'}")
            states[d] = state
            del pending[d]
            report(d, state, time.perf_counter() - t0)
        if pending:
            time.sleep(poll_s)
    return states
