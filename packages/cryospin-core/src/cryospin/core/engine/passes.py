"""Passes over the whole shard: the switch pass, the grid searches, the final pass.

* :func:`switch_pass`: fill the pose table, from the encoder's best candidates or
  :func:`initial_poses` (``init_poses``);
* :func:`search_before`: the global grid search of every table pose before a direct epoch while
  the frequency mask grows (:func:`.pose_search.search_table`), with its stopping rule;
* :func:`record_search`: the share of all particles a search pass moved, summed over processes;
* :func:`final_pass`: the poses a finished trainer hands back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cryospin.core.engine.collective import Collective
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.loop_state import LoopState, ParticleState
from cryospin.core.engine.sharding import ShardData
from cryospin.core.engine.stages import EngineContext
from cryospin.core.errors import ConfigError


def initial_poses(cfg: RunConfig, data: ShardData) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Start poses of a run without an encoder: ``(rotations (n, 3, 3), shifts_px or None)``.

    Rows are ``data``'s local rows. ``init_poses: random``: Haar-random rotations, one draw over
    the whole set (seeded by ``seed + 1``), of which this shard's block; no shifts.
    ``init_poses: file``: the particle file's rotations (RELION A) and, with ``shifts``, its
    content shifts ``-origin / pixel size`` in working-box pixels (the known-pose ceiling of the
    benchmarks, with ``refine_poses: false``).

    Raises:
        ConfigError: ``init_poses: file`` and the file holds no (finite) poses.
    """
    if cfg.init_poses == "random":
        from cryospin.core.so3 import random_rotations

        gen = torch.Generator().manual_seed(cfg.seed + 1)
        return random_rotations(data.n_set, generator=gen)[data.start : data.stop], None
    stack, sel = data.stack, data.owned_global
    rot = None if stack.rotations is None else np.asarray(stack.rotations)[sel]
    if rot is None or not np.isfinite(rot).all():
        raise ConfigError(
            f"init_poses: file: {cfg.particles} holds no poses for every "
            "particle (rlnAngleRot/Tilt/Psi)"
        )
    shifts = None
    if cfg.shifts and stack.shifts_A is not None:
        shifts = torch.as_tensor(-np.asarray(stack.shifts_A)[sel] / data.pixel_size_A)
    return torch.as_tensor(rot), shifts


def switch_pass(
    cfg: RunConfig,
    loop: LoopState,
    ctx: EngineContext,
    stages: dict[str, Any],
    data: ShardData,
    rows: ParticleState,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Initialise the pose table of ``data``'s particles, then set up the direct stage.

    With an encoder: each particle's best candidate (the amortized stage's
    ``best_candidates``, with a grid search of ``switch_search`` rotations when set), its
    shift and winning head; without one: :func:`initial_poses`. ``rows`` (the trainer's
    per-particle poses) then hold the table's poses, ``loop.table_ready`` is set, and the pass's
    time goes to ``ctx.extra["switch_time_s"]``.
    """
    t0 = time.perf_counter()
    table = ctx.table
    local = torch.as_tensor(data.indices)
    if ctx.encoder is not None:
        idx, rots, shifts, wins = stages["amortized"].best_candidates(
            ctx, data, cfg.batch_size, progress, search=cfg.switch_search
        )
        local = torch.as_tensor(idx)
        rows.winners[idx] = wins
    else:
        rots, shifts = initial_poses(cfg, data)
    table.set_base(local, rots)
    if shifts is not None:
        table.shift[local] = shifts.to(table.shift.dtype)
    rows.rot[local] = table.rotations(local).detach()
    rows.shift[local] = table.shift[local]
    loop.table_ready = True
    stages["direct"].setup(ctx)
    ctx.extra["switch_time_s"] = time.perf_counter() - t0


def record_search(loop: LoopState, comm: Collective, n: int, epoch: int, share: float) -> None:
    """Record in ``loop`` the share of all particles moved by the pass before ``epoch``.

    ``share`` is the share of this process's ``n`` particles; the record is over all processes.
    """
    moved, total = comm.reduce([share * n, float(n)])
    loop.search_epoch, loop.search_moved = epoch, float(moved / max(total, 1.0))


def search_before(
    epoch: int,
    cfg: RunConfig,
    loop: LoopState,
    ctx: EngineContext,
    data: ShardData,
    comm: Collective,
) -> bool:
    """Direct stage, while the mask grows: the global grid search of every table pose.

    With ``switch_search > 0`` each direct epoch whose mask is below ``mask_radius`` starts
    with :func:`.pose_search.search_table` (projection matching coarse to fine), until a
    pass moves fewer than ``search_stop`` of the particles to another basin (a convergence
    test, collective over processes). The search scores on the mask of the stage's first
    direct epoch at most (the switch's 16 shells with coarse-to-fine): the grid's spacing
    (about 13° for 4,096 rotations) cannot tell finer detail apart, and the cost of a pass
    stays that of the first. Its share of moved poses and its time go to ``ctx.extra``
    (the epoch's record). Returns whether it searched (the table's poses may have changed).
    """
    if not (cfg.switch_search and cfg.refine_poses):  # fixed (known) poses stay as given
        return False
    if loop.stage != "direct" or not loop.table_ready or loop.step_in_epoch:
        return False
    if cfg.mask_radius_at(epoch) >= cfg.mask_radius or loop.search_epoch == epoch:
        return False
    if loop.search_moved is not None and loop.search_moved < cfg.search_stop:
        return False
    from cryospin.core.engine.pose_search import search_table

    first = loop.switch_epoch or 0
    radius = min(cfg.mask_radius_at(epoch), cfg.mask_radius_at(first))
    ctx.set_mask(frequency_mask(data.box, radius, ctx.device))
    t0 = time.perf_counter()
    share = search_table(ctx, data, cfg.batch_size, cfg.switch_search)
    record_search(loop, comm, len(data), epoch, share)
    ctx.extra["search_replaced"] = share
    ctx.extra["search_time_s"] = time.perf_counter() - t0
    return True


def final_pass(
    cfg: RunConfig,
    loop: LoopState,
    ctx: EngineContext,
    stages: dict[str, Any],
    data: ShardData,
    rows: ParticleState,
) -> np.ndarray:
    """Put the final poses into ``rows``; return each particle's winning head (``-1``: none).

    Still in the amortized stage: every particle's best candidate of the trained encoder (one
    pass with the amortized stage's ``best_candidates``); after the switch: the pose table's
    poses and shifts; else (no step yet) ``rows`` as they are.
    """
    winners = rows.winners.copy()
    if loop.stage == "amortized" and ctx.encoder is not None:
        idx, rots, shifts, winners = stages["amortized"].best_candidates(ctx, data, cfg.batch_size)
        rows.rot[idx] = rots.to(rows.rot.dtype)
        if shifts is not None:
            rows.shift[idx] = shifts.to(rows.shift.dtype)
    elif loop.table_ready:
        local = torch.as_tensor(data.indices)
        with torch.no_grad():
            rows.rot[local] = ctx.table.rotations(local)
        rows.shift[local] = ctx.table.shift[local]
    return winners
