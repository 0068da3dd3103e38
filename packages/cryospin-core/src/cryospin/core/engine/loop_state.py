"""The trainer's own state, as the dataclasses a checkpoint saves whole.

* :class:`LoopState`: where the loop is (epoch, step, stage, the switch's and the grid search's
  bookkeeping, the epoch's accumulators), the same on every process; saved in ``last.pt`` (key
  ``loop``) as a plain dictionary (:meth:`LoopState.to_dict`).
* :class:`ParticleState`: one row per particle of the trainer's shard (the last pose a step gave
  each particle, the winning head, their values at the end of the previous epoch); saved in the
  process's shard file (:mod:`cryospin.core.engine.sharding`) beside its pose-table rows.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def _accumulators() -> dict[str, float]:
    return {"loss": 0.0, "n": 0, "time": 0.0}


@dataclass
class LoopState:
    """Position and bookkeeping of the training loop (plain values only: saved as a dict).

    Attributes:
        epoch: the epoch being trained (0-based); ``step_in_epoch`` steps of it are done.
        global_step: steps done since the start of the run.
        stage: ``"amortized"`` or ``"direct"``, the stage training now.
        table_ready: the pose table holds every particle's pose (the switch pass ran).
        switch_epoch: the first direct epoch after an amortized stage, ``None`` before.
        search_epoch, search_moved: the last grid search of the pose table: the epoch it ran
            before and the share of all particles (every process) it moved.
        patience, head_changes, prev_loss: the ``switch: auto`` rule's inputs (head changes
            per amortized epoch; the previous epoch's loss).
        done: the schedule is finished.
        global_batch: particles per step over every process (kept on resume).
        save_seq: number of the last checkpoint save (names its shard files).
        acc: this epoch's summed loss, particles and time (seconds), over every process.
        stage_stats: per stage, ``{"images": n, "time_s": seconds}`` over the run.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    stage: str = "amortized"
    table_ready: bool = False
    switch_epoch: int | None = None
    search_epoch: int | None = None
    search_moved: float | None = None
    patience: int = 0
    head_changes: list[float | None] = field(default_factory=list)
    prev_loss: float | None = None
    done: bool = False
    global_batch: int = 0
    save_seq: int = 0
    acc: dict[str, float] = field(default_factory=_accumulators)
    stage_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy as plain containers (what ``last.pt`` holds under ``loop``)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoopState:
        """Rebuild a :meth:`to_dict` output."""
        return cls(**json.loads(json.dumps(state)))

    def count_step(self, loss_sum: float, n_step: int, seconds: float) -> None:
        """Add one finished step (summed loss, particles over every process, time)."""
        self.acc["loss"] += loss_sum
        self.acc["n"] += n_step
        self.acc["time"] += seconds
        st = self.stage_stats.setdefault(self.stage, {"images": 0, "time_s": 0.0})
        st["images"] += n_step
        st["time_s"] += seconds
        self.global_step += 1
        self.step_in_epoch += 1

    def stage_summary(self) -> dict[str, dict[str, float | None]]:
        """Return :attr:`stage_stats` with each stage's ``images_per_s`` (``None``: no time)."""
        return {
            name: {**st, "images_per_s": st["images"] / st["time_s"] if st["time_s"] else None}
            for name, st in self.stage_stats.items()
        }

    def reset_epoch(self) -> None:
        """Zero the epoch's accumulators."""
        self.acc = _accumulators()


#: the per-particle rows a shard file holds beside the pose table (first dimension = particle)
ROW_KEYS = ("rot", "prev_rot", "winners", "prev_winners", "shift")


@dataclass
class ParticleState:
    """One row per particle of the trainer's shard (local row ``i`` = the shard's ``i``-th).

    Attributes:
        rot: ``(n, 3, 3)`` float32 the pose the last step gave each particle (RELION ``A``):
            the encoder's winner in the amortized stage, the pose table's in the direct stage
            (identity before a particle's first step).
        shift: ``(n, 2)`` float32 its content shift in pixels, the same way (zero without one).
        winners: ``(n,)`` int64 its winning head at its last amortized step, ``-1`` if none.
        prev_rot, prev_winners: ``rot`` and ``winners`` at the end of the previous epoch
            (``prev_rot`` ``None`` before the first one ends).
    """

    rot: torch.Tensor
    shift: torch.Tensor
    winners: np.ndarray
    prev_winners: np.ndarray
    prev_rot: torch.Tensor | None = None

    @classmethod
    def fresh(cls, n: int) -> ParticleState:
        """Return the rows of ``n`` particles before any step: identity, zero, no winner."""
        return cls(
            torch.eye(3).repeat(n, 1, 1),
            torch.zeros(n, 2),
            np.full(n, -1, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
        )

    def rows(self) -> dict[str, Any]:
        """Return copies of every row array by name (:data:`ROW_KEYS`), for a shard file."""
        return {
            "rot": self.rot.clone(),
            "prev_rot": None if self.prev_rot is None else self.prev_rot.clone(),
            "winners": self.winners.copy(),
            "prev_winners": self.prev_winners.copy(),
            "shift": self.shift.clone(),
        }

    def end_epoch(self) -> None:
        """Remember this epoch's poses and winners as the previous epoch's."""
        self.prev_rot = self.rot.clone()
        self.prev_winners = self.winners.copy()
