"""The ``torch.distributed`` process group and the ``torchrun`` launcher of ``cryospin run``.

Launch::

    torchrun --nproc-per-node G -m cryospin.core run --particles P.star --out OUT ...
    cryospin run --launcher torchrun --gpus G --particles P.star --out OUT ...   # the same
    # several nodes: torchrun --nnodes K --node-rank k --rdzv-endpoint HOST:PORT ... (shared OUT)

Backend: ``nccl`` when the run's device is CUDA (rank ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``),
``gloo`` on CPU. Without ``WORLD_SIZE > 1`` in the environment no group is formed and every
helper here answers as for one process (rank 0 of 1). What the ranks do together is in
:mod:`cryospin.core.engine.distributed`.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import os
import signal
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

from cryospin.core.errors import ConfigError


def is_active() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Return this process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Return the number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Synchronise all ranks (no-op with one process)."""
    if is_active():
        dist.barrier()


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(cfg: Any) -> int:
    """Join the process group described by torchrun's environment; return the world size.

    Does nothing (returns 1) unless ``WORLD_SIZE > 1``. Backend ``nccl`` for CUDA devices,
    ``gloo`` otherwise; the group is destroyed at exit.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 1
    if not dist.is_initialized():
        cuda = _wants_cuda(cfg.device)
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise ConfigError(
                    f"process {local} of this node has no GPU ({torch.cuda.device_count()} "
                    "visible): start at most one process per GPU (--gpus / --nproc-per-node)"
                )
            torch.cuda.set_device(local)
        timeout = datetime.timedelta(seconds=int(os.environ.get("CRYOSPIN_DIST_TIMEOUT", "1800")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
        atexit.register(_destroy)
    return dist.get_world_size()


def _destroy() -> None:
    """Destroy the group at exit, after freeing unreachable objects that still hold it.

    DDP reducers of trainers kept alive only by reference cycles would otherwise be freed during
    interpreter shutdown, after the group is gone (observed on gloo as an abort, "terminate
    called without an active exception", of a rank leaving while rank 0 still writes).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def torchrun_command(nproc: int, args: list[str], nnodes: int = 1) -> list[str]:
    """Return the command ``python -m torch.distributed.run ... -m cryospin.core run ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        cmd += ["--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "cryospin.core", "run", *args]
    return cmd


def relaunch(nproc: int, args: list[str]) -> int:
    """Run ``cryospin run ARGS`` under torchrun with ``nproc`` processes; return its exit code.

    SIGTERM received by this process is passed on to torchrun, which sends SIGTERM to every rank
    (each checkpoints and stops). Ctrl-C reaches torchrun directly (same process group).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(torchrun_command(nproc, args), env=env)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signum)

    old = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cli_args(flags: dict[str, Any], resume: bool, out: str, config: str | None) -> list[str]:
    """Rebuild ``cryospin run`` arguments from parsed options (``None`` = not given)."""
    args = ["--out", out]
    if config:
        args += ["--config", config]
    for key, value in flags.items():
        if value is None:
            continue
        opt = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(opt if value else "--no-" + key.replace("_", "-"))
        else:
            args += [opt, str(value)]
    if resume:
        args.append("--resume")
    return args
