"""The end of an epoch (:class:`EpochEnd`): its record, the evaluation, the switch rule.

Every number of the record is over all processes: the per-particle statistics (pose change,
head usage and changes) are summed with the :class:`.collective.Collective` before they are
divided. The evaluation (:class:`EpochEvaluation`) runs on rank 0 on arrays gathered from every
process (:class:`.results.EpochState`), never on the trainer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cryospin.core.engine.collective import Collective
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.loop_state import LoopState, ParticleState
from cryospin.core.engine.metrics_log import MetricsLog
from cryospin.core.engine.results import EpochEvaluator, EpochState
from cryospin.core.engine.sharding import ShardData
from cryospin.core.so3 import geodesic_distance_deg

#: particles (at most) of a multi-process run whose poses are gathered on rank 0 for the
#: per-epoch evaluation (a one-process run evaluates all of them)
EVAL_SAMPLE = 4096

#: keys of the stages' and searches' per-epoch numbers moved from ``ctx.extra`` into the record
EXTRA_KEYS = ("switch_search_replaced", "search_replaced", "search_time_s", "switch_time_s")


def epoch_record(
    epoch: int,
    cfg: RunConfig,
    loop: LoopState,
    rows: ParticleState,
    comm: Collective,
    n_heads: int,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], float, float | None]:
    """Return the epoch's record before evaluation: ``(record, mean loss, head change or None)``.

    ``loss``, ``wall_time_s``, ``images_per_s``, ``mask_radius``, ``steps``; with several
    processes (or a global batch other than ``batch_size``) ``world_size`` and
    ``global_batch_size``; the numbers of ``extra`` (:data:`EXTRA_KEYS`, removed from it);
    ``pose_change_deg`` (mean geodesic distance from the previous epoch's poses); amortized:
    ``head_usage`` (share of particles per winning head) and ``head_change`` (share of the
    particles seen in both epochs whose winning head changed).
    """
    acc = loop.acc
    loss = acc["loss"] / max(acc["n"], 1)  # global: reduced every step
    rec: dict[str, Any] = {
        "epoch": epoch,
        "stage": loop.stage,
        "loss": loss,
        "wall_time_s": acc["time"],
        "images_per_s": acc["n"] / acc["time"] if acc["time"] > 0 else None,
        "mask_radius": cfg.mask_radius_at(epoch),
        "steps": loop.global_step,
    }
    if comm.world > 1 or loop.global_batch != cfg.batch_size:
        rec.update(world_size=comm.world, global_batch_size=loop.global_batch)
    for key in EXTRA_KEYS:
        if key in extra:
            rec[key] = extra.pop(key)
    vals = [0.0, 0.0, 0.0, 0.0] + [0.0] * n_heads
    if rows.prev_rot is not None:
        d = geodesic_distance_deg(rows.prev_rot.double(), rows.rot.double())
        vals[0], vals[1] = float(d.sum()), float(len(d))
    amortized = loop.stage == "amortized"
    if amortized:
        w, pw = rows.winners, rows.prev_winners
        seen = (pw >= 0) & (w >= 0)
        vals[2], vals[3] = float((pw[seen] != w[seen]).sum()), float(seen.sum())
        vals[4:] = np.bincount(w[w >= 0], minlength=n_heads).astype(float).tolist()
    red = comm.reduce(vals)
    if rows.prev_rot is not None and red[1] > 0:
        rec["pose_change_deg"] = float(red[0] / red[1])
    head_change = None
    if amortized:
        counts = red[4:]
        rec["head_usage"] = (counts / max(counts.sum(), 1)).round(4).tolist()
        if red[3] > 0:
            head_change = float(red[2] / red[3])
            rec["head_change"] = head_change
    return rec, loss, head_change


def decide_switch(
    cfg: RunConfig, loop: LoopState, epoch: int, loss: float, head_change: float | None
) -> bool:
    """Whether the amortized stage ends after ``epoch`` (``switch: epoch`` or ``auto``).

    ``switch: auto`` appends ``head_change`` to ``loop.head_changes`` and updates
    ``loop.patience`` (:meth:`.config.AutoSwitch.decide`).
    """
    if cfg.stage_schedule != "semi-amortized" or loop.stage != "amortized":
        return False
    done = epoch + 1
    if cfg.switch == "epoch":
        return done >= int(cfg.switch_epoch or 0)
    prev = loop.prev_loss
    loss_change = None if prev in (None, 0) else abs(loss - prev) / abs(prev)
    loop.head_changes.append(head_change)
    switch, loop.patience = cfg.auto_switch.decide(
        done, loop.head_changes, loss_change, loop.patience
    )
    return bool(switch)


class EpochEnd:
    """Closes an epoch: its record, the evaluation, the switch rule, the ``metrics.jsonl`` line.

    Args:
        cfg: the run configuration (schedule resolved).
        comm: the other processes.
        n_heads: the encoder's candidates per image (1 without one).
        evaluation: the per-epoch evaluation.
        log: ``metrics.jsonl`` (written by rank 0).
    """

    def __init__(
        self,
        cfg: RunConfig,
        comm: Collective,
        n_heads: int,
        evaluation: EpochEvaluation,
        log: MetricsLog,
    ) -> None:
        self.cfg, self.comm, self.n_heads = cfg, comm, n_heads
        self.evaluation, self.log = evaluation, log

    def __call__(
        self, epoch: int, loop: LoopState, rows: ParticleState, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the record of ``epoch`` to ``metrics.jsonl`` and return it.

        The record: :func:`epoch_record`, ``loss_change``, the evaluation's metrics,
        ``eval_time_s`` and ``switch``. Updates ``loop`` (previous loss, accumulators reset,
        the switch to the direct stage when :func:`decide_switch` says so) and ``rows`` (this
        epoch's poses become the previous ones).
        """
        cfg = self.cfg
        rec, loss, head_change = epoch_record(
            epoch, cfg, loop, rows, self.comm, self.n_heads, extra
        )
        if loop.prev_loss:
            rec["loss_change"] = abs(loss - loop.prev_loss) / abs(loop.prev_loss)
        t0 = time.perf_counter()
        rec.update(self.evaluation(epoch, rows, (epoch + 1) % cfg.eval_every == 0))
        rec["eval_time_s"] = time.perf_counter() - t0  # evaluation vs a truth (not training)
        switch = decide_switch(cfg, loop, epoch, loss, head_change)
        loop.prev_loss = loss
        rows.end_epoch()
        loop.reset_epoch()
        if switch:
            rec["switch"] = True
            loop.switch_epoch = epoch + 1
            loop.stage = "direct"
        self.log.append(rec)
        return rec


class EpochEvaluation:
    """Calls an :data:`.results.EpochEvaluator` with the poses of the evaluated particles.

    One process evaluates all its particles; several gather at most :data:`EVAL_SAMPLE` of
    them (a fixed sample, rows sorted by position in the set) on rank 0, the only one that
    evaluates.
    """

    def __init__(
        self,
        evaluate: EpochEvaluator | None,
        comm: Collective,
        data: ShardData,
        volume: Callable[[], torch.Tensor],
        shifts: bool,
    ) -> None:
        self.evaluate, self.comm, self.data = evaluate, comm, data
        self.volume, self.shifts = volume, shifts
        self.rows = data.indices.copy()
        if comm.world > 1 and data.n_set > EVAL_SAMPLE:
            pick = np.random.default_rng(12345).choice(data.n_set, EVAL_SAMPLE, replace=False)
            pos = np.sort(pick)
            self.rows = pos[(pos >= data.start) & (pos < data.stop)] - data.start

    def __call__(self, epoch: int, rows: ParticleState, with_map: bool) -> dict[str, Any]:
        """Return the evaluation's metrics on rank 0 (``{}`` elsewhere or without an evaluation)."""
        if self.evaluate is None:
            return {}
        loc = self.rows
        part = (self.data.owned_global[loc], rows.rot[loc].numpy(), rows.shift[loc].numpy())
        parts = self.comm.gather(part)
        if parts is None:
            return {}
        state = EpochState(
            epoch=epoch,
            indices=np.concatenate([p[0] for p in parts]),
            rotations=np.concatenate([p[1] for p in parts]).astype(np.float64),
            shifts_px=(
                np.concatenate([p[2] for p in parts]).astype(np.float64) if self.shifts else None
            ),
            pixel_size_A=self.data.pixel_size_A,
            volume=self.volume,
            with_map=with_map,
        )
        return self.evaluate(state)
