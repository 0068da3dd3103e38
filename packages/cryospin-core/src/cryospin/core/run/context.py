"""What every step of a run reads: the configuration, the run folder, the particles, the truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import io_bridge
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.results import Truth
from cryospin.core.errors import ConfigError, InputError
from cryospin.core.particles import ParticleStack


@dataclass(frozen=True)
class RunInputs:
    """The inputs of one run, shared by its steps (train, assemble, evaluate, write).

    Attributes:
        cfg: the resolved configuration.
        out: the run folder (checked and locked by :mod:`cryospin.core.run.folder`).
        particles: the particle file as given (``cfg.particles``).
        stack: the particles (after ``--apix`` and ``--ind``, :mod:`cryospin.core.run.inputs`).
        data: the whole stack's preprocessed data (working ``box``, ``pixel_size_A``, the
            stack's noise level, the applied contrast inversion).
        truth: the truth for the metrics (:func:`load_truth`).
        dist_on: under a process group of several ranks.
    """

    cfg: RunConfig
    out: Path
    particles: str
    stack: ParticleStack
    data: ParticleData
    truth: Truth
    dist_on: bool

    @property
    def n(self) -> int:
        """Number of particles of the run."""
        return len(self.stack)

    @property
    def pixel_size_A(self) -> float:
        """Pixel size of the working box (Å)."""
        return float(self.data.pixel_size_A)

    @property
    def box(self) -> int:
        """Working box (px)."""
        return int(self.data.box)


def prepare_inputs(cfg: RunConfig, out: Path, stack: ParticleStack, dist_on: bool) -> RunInputs:
    """Preprocess the whole stack and collect the truth: the :class:`RunInputs` of a run.

    Raises:
        ConfigError: the configuration names no particle file.
        InputError: the ``--gt-map`` does not fit the working box (:func:`load_truth`).
    """
    particles = cfg.particles
    if particles is None:  # open_run_stack read it; a config without one never gets here
        raise ConfigError("no particle file: give --particles (.star, .cs or .mrcs)")
    cache = cfg.cache_images and not dist_on
    data = ParticleData(stack, cfg.box, cfg.invert_contrast, cache=cache)
    truth = load_truth(cfg, stack, data.box, data.pixel_size_A)
    return RunInputs(cfg, Path(out), particles, stack, data, truth, dist_on)


def load_truth(cfg: RunConfig, stack: Any, box: int, apix: float) -> Truth:
    """Collect the truth for the metrics: the stack's poses and content shifts, when all finite.

    Content shift = -RELION origin, in Å; the ``--gt-map`` is cropped to the working box
    (``box`` px of ``apix`` Å).

    Raises:
        InputError: the ``--gt-map`` box is smaller than ``box`` or its extent differs.
    """
    truth = Truth()
    if stack.rotations is not None and np.isfinite(np.asarray(stack.rotations)).all():
        truth.rotations = np.asarray(stack.rotations, dtype=np.float64)
    if stack.shifts_A is not None and np.isfinite(np.asarray(stack.shifts_A)).all():
        truth.shifts_A = -np.asarray(stack.shifts_A, dtype=np.float64)
    if cfg.gt_map:
        vol, gt_apix = io_bridge.read_map(cfg.gt_map)
        if vol.shape[0] != box:
            from cryospin.core.fourier import fourier_crop

            if vol.shape[0] < box:
                raise InputError(
                    f"--gt-map box {vol.shape[0]} is smaller than the working box {box}"
                )
            if abs(gt_apix * vol.shape[0] / box - apix) > 1e-3 * apix:
                raise InputError(
                    f"--gt-map voxel {gt_apix:.4g} Å x {vol.shape[0]} does not match "
                    f"the particles' {apix:.4g} Å x {box}"
                )
            vol = fourier_crop(torch.as_tensor(vol, dtype=torch.float64), box, 3).float().numpy()
        truth.volume = torch.as_tensor(vol).numpy()
    return truth
