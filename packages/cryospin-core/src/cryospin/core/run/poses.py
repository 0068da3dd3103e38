"""The run's pose files: ``poses.star``, ``poses.cs``, ``poses.pkl`` (and the input's own format).

One code path writes them, :func:`write_pose_files`: at the end of a run (from the trained results)
and after every checkpoint (:class:`CheckpointPoses`, from what the checkpoint holds). Both files
are written atomically by the I/O plugin (:mod:`cryospin.core.atomic`), so a run killed at any
moment leaves the previous or the new file, never a torn one. The particle files name every image
by the absolute path of the stack it was read from (``extra["absolute_image_paths"]``, see
``cryospin.io.image_locations``), so they read from the output folder or anywhere else.

Poses of a checkpoint (:func:`checkpoint_poses`): once the pose table is initialised (direct stage)
the table's ``R_i = exp(w_i) R0_i`` and its shifts; before (amortized stage) each particle's
rotation and shift from the last encoder pass that saw it (identity and zero for particles not yet
seen). The rows are read from the checkpoint's shard files (one per process), one file at a time,
on the process that writes the files (rank 0), after every rank saved its shard: no training step
gathers the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine import io_bridge
from cryospin.core.engine.pose_table import table_rotations

#: Particle-file formats every run writes (``poses.star``, ``poses.cs``), by suffix.
POSE_FORMATS = (".star", ".cs")


def write_pose_files(
    out: Path,
    particles: str,
    stack: Any,
    rotations: np.ndarray,
    shifts_px: np.ndarray,
    pixel_size_A: float,
    box: int,
) -> None:
    """Write ``out/poses.star``, ``out/poses.cs`` and ``out/poses.pkl``, atomically.

    ``rotations`` ``(N, 3, 3)`` are RELION's ``A`` for every particle of ``stack`` (in stack order);
    ``shifts_px`` ``(N, 2)`` are the content translations in pixels, written as RELION origins
    ``-shift * pixel_size_A`` (Å; the origin undoes the translation). Whatever the input's format,
    the run writes a RELION STAR and a cryoSPARC particle file (:data:`POSE_FORMATS`), plus
    ``poses<suffix of particles>`` when a plugin writes that format too.

    Raises:
        CryospinError: no installed I/O plugin writes STAR or ``.cs`` files.
    """
    origins_A = -np.asarray(shifts_px, dtype=np.float64) * pixel_size_A
    stack = dataclasses.replace(stack, extra={**stack.extra, "absolute_image_paths": True})
    suffixes = dict.fromkeys(POSE_FORMATS)
    own = Path(particles).suffix.lower()
    if own and io_bridge.provides("write_poses", own):
        suffixes[own] = None
    for suffix in suffixes:
        io_bridge.write_poses(Path(out) / f"poses{suffix}", stack, rotations, origins_A)
    io_bridge.write_poses_pkl(Path(out) / "poses.pkl", rotations, origins_A, pixel_size_A, box)


def _rows(
    table: dict[str, Any], rot: torch.Tensor, shift: torch.Tensor, sel: np.ndarray, ready: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``(k, 3, 3)`` and shifts ``(k, 2)`` px (float64) of rows ``sel`` of one state."""
    s = torch.as_tensor(sel, dtype=torch.int64)
    if ready:
        with torch.no_grad():
            r = table_rotations(table["omega"][s], table["base"][s])
        t = table["shift"][s]
    else:
        r, t = rot[s], shift[s]
    return r.double().numpy(), t.double().numpy()


def checkpoint_poses(
    ckpt_dir: Path, state: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses held by the checkpoint in ``ckpt_dir``: ``(global indices, rotations, shifts px)``.

    ``state`` is the content of ``ckpt_dir/last.pt`` when the caller has it in memory (it is read
    otherwise). The rows come from the shard files it names
    (:func:`cryospin.core.engine.sharding.save_checkpoint`).

    Raises:
        InputError: ``last.pt`` or a shard file is missing or unreadable.
    """
    ckpt_dir = Path(ckpt_dir)
    if state is None:
        state = ckpt.load(ckpt_dir / ckpt.CHECKPOINT_NAME)
    ready = bool(state["loop"]["table_ready"])
    parts = []
    for name in state["sharded"]["files"]:
        sh = ckpt.load(ckpt_dir / name)
        n = len(sh["indices"])
        parts.append(
            (np.asarray(sh["indices"], np.int64),)
            + _rows(sh["table"], sh["rot"], sh["shift"], np.arange(n), ready)
        )
        del sh
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def _by_index(
    n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 3, 3)`` rotations and ``(n, 2)`` shifts from ``(indices, rotations, shifts)`` parts.

    Particles of no part get the identity and a zero shift.
    """
    rot, shift = np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 2))
    for gidx, r, s in parts:
        rot[gidx], shift[gidx] = r, s
    return rot, shift


def assemble_poses(ckpt_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``(n, 3, 3)`` and shifts ``(n, 2)`` px of a checkpoint, by global index.

    Particles the checkpoint does not hold (the other half-set) get the identity and zero shift.
    O(n) memory: for the process that writes files, and for inspection.
    """
    return _by_index(n, [checkpoint_poses(ckpt_dir)])


class CheckpointPoses:
    """Rewrites the run's pose files after each checkpoint (the trainers' ``on_checkpoint``).

    The files cover every particle of ``stack``: the rows of the checkpoint just saved, plus those
    of the run's other checkpoint folders that exist (the other half-set, in its own frame: half 2
    is aligned onto half 1 only at the end). Particles of no checkpoint yet: identity, zero shift.
    """

    def __init__(
        self,
        out: Path,
        particles: str,
        stack: Any,
        pixel_size_A: float,
        box: int,
        ckpt_dirs: Sequence[Path],
    ) -> None:
        self.out, self.particles, self.stack = Path(out), particles, stack
        self.pixel_size_A, self.box = pixel_size_A, box
        self.ckpt_dirs = [Path(d) for d in ckpt_dirs]

    def __call__(self, ckpt_dir: Path, state: dict[str, Any]) -> None:
        """Write the pose files; ``state`` is what was just saved in ``ckpt_dir/last.pt``."""
        parts = [
            checkpoint_poses(d, state if d == Path(ckpt_dir) else None)
            for d in self.ckpt_dirs
            if d == Path(ckpt_dir) or (d / ckpt.CHECKPOINT_NAME).exists()
        ]
        rot, shift = _by_index(len(self.stack), parts)
        write_pose_files(
            self.out, self.particles, self.stack, rot, shift, self.pixel_size_A, self.box
        )
