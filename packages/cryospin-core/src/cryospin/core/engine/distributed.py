"""Multi-process reconstruction with ``torch.distributed`` (launched by ``torchrun``).

Launch, backends and the process group: :mod:`cryospin.core.engine.process_group` (its helpers
are re-exported here). Every process runs the one :class:`~cryospin.core.engine.trainer.Trainer`
on its shard of the particles; it talks to the others only through its
:class:`~cryospin.core.engine.collective.Collective`, which without a process group of more than
one rank does nothing. What each rank does:

* it owns a fixed block of the particles (:mod:`cryospin.core.engine.sharding`): reads only their
  images, holds and updates only their pose-table rows and Adam state, checkpoints them in its own
  shard file; no step gathers the whole table;
* the encoder and decoder are wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`
  (:mod:`cryospin.core.engine.ddp`); a comm hook scales each rank's gradient by ``n_r / n_t``
  (its share of the global batch) before the all-reduce sum, so the update equals a one-process
  update on the global batch of ``G * batch_size`` particles, whatever the split. The direct
  stage's pose steps use the plain decoder (per-particle gradients need no all-reduce); its
  volume steps go through DDP;
* ``batch_size`` is per rank: the global batch is ``G * batch_size`` (reported in the metrics
  and ``summary.json``, :func:`summary_fields`). Learning rates are those of a one-process run
  with that global batch;
* losses, images/s, winner-takes-all head statistics, pose changes and the stop request
  (SIGINT/SIGTERM on any rank) are reduced across ranks every step/epoch; only rank 0 writes
  files and draws the progress bar; the per-epoch evaluation runs on rank 0 on up to
  :data:`~cryospin.core.engine.epoch_end.EVAL_SAMPLE` particles gathered there;
* after each checkpoint rank 0 writes ``poses.star``/``poses.pkl`` from the shard files (after
  every rank saved its own; :mod:`cryospin.core.run.poses`); at the end it gathers the
  final poses once (:func:`gather_results`) and writes the pose files and the maps.

Batch norm: on CUDA, batch-norm layers become ``SyncBatchNorm`` (statistics of the global batch);
on CPU PyTorch does not support ``SyncBatchNorm``, so each rank keeps its own batch statistics and
a G-rank run with a ``batch_norm`` encoder differs from one process beyond rounding (see
:mod:`cryospin.core.engine.ddp`). Without batch norm, a G-rank run equals one process up to
floating-point summation order (see ``tests/integration/test_torchrun.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cryospin.core.engine.collective import make_collective
from cryospin.core.engine.process_group import (
    barrier,
    cli_args,
    init_from_env,
    is_active,
    is_main,
    rank,
    relaunch,
    torchrun_command,
    world_size,
)
from cryospin.core.engine.results import TrainResult

#: the process-group and launcher helpers (:mod:`cryospin.core.engine.process_group`) are part
#: of this module's interface
__all__ = [
    "barrier",
    "cli_args",
    "gather_results",
    "init_from_env",
    "is_active",
    "is_main",
    "rank",
    "relaunch",
    "summary_fields",
    "torchrun_command",
    "world_size",
]


def summary_fields(results: list[TrainResult]) -> dict[str, Any]:
    """``world_size``, ``batch_size_per_rank`` and ``global_batch_size`` for ``summary.json``.

    The global batch is the trainers' (``results``: a resumed run keeps its checkpoint's, which
    differs from ``world_size * batch_size`` when the number of processes changed).
    """
    g = world_size()
    gb = int(results[-1].global_batch or 0)
    per = gb // g if gb % g == 0 else gb / g
    return {"world_size": g, "batch_size_per_rank": per, "global_batch_size": gb}


def gather_results(results: list[TrainResult]) -> list[TrainResult] | None:
    """Assemble each trainer's per-rank results on rank 0 (once, at the end).

    Returns the merged results on rank 0, ``None`` on the other ranks, ``results`` unchanged
    in one process (:class:`.collective.Collective`).
    """
    comm = make_collective()
    if comm.world == 1:
        return results
    merged: list[TrainResult] = []
    for r in results:
        part = {
            "indices": r.indices,
            "rotations": r.rotations,
            "shifts_px": r.shifts_px,
            "winners": r.winners,
        }
        parts = comm.gather(part)  # only rank 0 receives (O(N) there alone)
        if parts is None:
            continue
        idx = np.concatenate([p["indices"] for p in parts])

        def cat(key: str, parts: list[Any] = parts) -> Any:
            return None if parts[0][key] is None else np.concatenate([p[key] for p in parts])

        merged.append(
            dataclasses.replace(
                r,
                indices=idx,
                rotations=cat("rotations"),
                shifts_px=cat("shifts_px"),
                winners=cat("winners"),
            )
        )
    return merged if comm.is_main else None
