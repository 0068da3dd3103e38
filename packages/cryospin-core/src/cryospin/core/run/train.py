"""Training step of a run: torch settings, one trainer per half-set (or one on the whole stack).

The trainer itself is the engine's (:class:`cryospin.core.engine.trainer.Trainer`, the same in
one process and under torchrun); this module only decides what each trains on, where it
checkpoints, which seed it gets and how it evaluates each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import report
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData, split_half_sets
from cryospin.core.engine.results import TrainResult
from cryospin.core.engine.trainer import Trainer
from cryospin.core.run.context import RunInputs
from cryospin.core.run.poses import CheckpointPoses


@dataclass
class Trained:
    """What the training step hands back (in this process).

    Attributes:
        results: one :class:`TrainResult` per trainer (half-sets 1 and 2, or the whole set);
            with several processes each holds this rank's particles only.
        half_seeds: the seeds of half-sets 1 and 2 (:func:`half_set_seeds`), ``None`` without
            half-sets.
    """

    results: list[TrainResult]
    half_seeds: tuple[int, int] | None = None


def setup_torch(cfg: RunConfig) -> None:
    """Threads (torch's default unless ``num_threads`` is set) and determinism."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def half_set_seeds(seed: int) -> tuple[int, int]:
    """Independent seeds of half-sets 1 and 2, derived from the run's ``seed``.

    Gold-standard half-maps must be refined independently: with one shared seed both halves start
    from the same random map and encoder weights, and their FSC is inflated wherever the data say
    little (a run on pure noise reported a resolution). Each half's trainer (initial map, encoder
    weights, batch order, random poses) gets its own seed, the first 31 bits of the
    ``numpy.random.SeedSequence(seed mod 2**64).spawn(2)`` children: deterministic, independent
    of each other and of ``seed + 1`` (which a trainer uses itself). The half-set split keeps
    ``seed``. Both are recorded in ``summary.json`` (``half_seeds``).
    """
    children = np.random.SeedSequence(seed % 2**64).spawn(2)
    a, b = (int(c.generate_state(1, dtype=np.uint32)[0] >> 1) for c in children)
    return a, b


def checkpoint_dirs(out: Path, half_sets: bool) -> list[Path]:
    """Return the checkpoint folders: ``out/half{1,2}/checkpoints``, else ``out/checkpoints``."""
    if half_sets:
        return [out / f"half{k}" / "checkpoints" for k in (1, 2)]
    return [out / "checkpoints"]


def train(run: RunInputs, *, resume: bool, console: Any) -> Trained:
    """Train the run's trainer(s) to the end of the schedule (or from a checkpoint, ``resume``).

    With ``half_sets`` two trainers, one per half-set (:func:`split_half_sets`), each with its
    own seed (:func:`half_set_seeds`) and the whole stack's noise level; else one on the whole
    stack (``run.data``). Each trainer appends to ``out/metrics.jsonl`` and, after every
    checkpoint, the pose files are rewritten
    (:class:`~cryospin.core.run.poses.CheckpointPoses`, rank 0). ``console``: the rich
    console of the progress display (``None``: stderr).

    Raises:
        cryospin.core.engine.checkpoint.StopRequested: stopped early after a checkpoint.
    """
    cfg, out, stack, base = run.cfg, run.out, run.stack, run.data
    metrics_path = out / "metrics.jsonl"  # a new run's old one was removed by open_run_folder
    ckpt_dirs = checkpoint_dirs(out, cfg.half_sets)
    pose_files = CheckpointPoses(out, run.particles, stack, run.pixel_size_A, run.box, ckpt_dirs)
    evaluate = report.make_epoch_evaluator(run.truth)
    common: dict[str, Any] = {"console": console, "evaluate": evaluate, "on_checkpoint": pose_files}
    if not cfg.half_sets:
        tr = Trainer(cfg, base, ckpt_dirs[0], metrics_path, **common)
        return Trained([tr.fit(resume=resume)])
    seeds = half_set_seeds(cfg.seed)
    results: list[TrainResult] = []
    for k, idx in enumerate(split_half_sets(stack, cfg.seed), start=1):
        data = ParticleData(
            stack,
            cfg.box,
            cfg.invert_contrast,
            subset=idx,
            cache=cfg.cache_images and not run.dist_on,
            noise_std=base.noise_std,
        )
        half_cfg = cfg.model_copy(update={"seed": seeds[k - 1]})
        tr = Trainer(half_cfg, data, ckpt_dirs[k - 1], metrics_path, tag={"half": k}, **common)
        results.append(tr.fit(resume=resume))
    return Trained(results, seeds)
