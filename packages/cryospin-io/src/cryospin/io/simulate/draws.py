"""Random draws of the simulator: poses, origins and CTFs, rounded to what the STAR file stores.

Every draw takes its own ``numpy.random.Generator`` (streams spawned from the seed by
:func:`cryospin.io.simulate.simulator.simulate_dataset`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryospin.core.errors import ConfigError
from cryospin.core.particles import CTFParams
from cryospin.core.so3 import quaternion_to_rotation
from cryospin.io.simulate import ctf as ctf_mod
from cryospin.io.simulate.config import SimulationConfig


def haar_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` Haar-uniform rotation matrices (normalised Gaussian quaternions)."""
    q = torch.from_numpy(rng.standard_normal((n, 4)))
    return quaternion_to_rotation(q).numpy()


def star_round(x: np.ndarray) -> np.ndarray:
    """Round to what the STAR writer stores (``%.10g``), so what is simulated is what is read."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    return np.array([float(f"{v:.10g}") for v in flat]).reshape(np.shape(x))


def load_rotations(path: Path) -> np.ndarray:
    """Rotations ``(N, 3, 3)`` (RELION ``A``) from a .star, cryoDRGN .pkl, .cs or .npy file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        rot = np.load(path)
    elif suffix == ".star":
        from cryospin.io.star import read_star

        rot = read_star(path, images=False).rotations
    elif suffix == ".cs":
        from cryospin.io.cryosparc import read_cs

        rot = read_cs(path, images=False).rotations
    elif suffix == ".pkl":
        from cryospin.io.cryodrgn import read_poses_pkl

        rot = read_poses_pkl(path, 1, 1.0)[0]
    else:
        raise ConfigError(f"{path}: unknown rotations format (use .star, .pkl, .cs or .npy)")
    if rot is None:
        raise ConfigError(f"{path}: holds no rotations")
    rot = np.asarray(rot, dtype=np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise ConfigError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3)")
    return rot


def quantise_poses(rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euler angles as stored in the STAR file, and the rotations they define exactly."""
    from cryospin.io.poses import euler_to_rotations, rotations_to_euler

    euler = star_round(rotations_to_euler(rotations))
    return euler, euler_to_rotations(euler[:, 0], euler[:, 1], euler[:, 2])


def no_ctf(n: int) -> CTFParams:
    """CTF parameters that evaluate to exactly ``-1`` (``w = 1``, zero defocus, ``Cs = 0``).

    Used for ``ctf=None``: an ideal amplitude-contrast image, written to the STAR file so that
    every reader's CTF formula reproduces it.
    """
    zeros = np.zeros(n)
    return CTFParams(
        defocus_u_A=zeros.copy(),
        defocus_v_A=zeros.copy(),
        defocus_angle_deg=zeros.copy(),
        voltage_kV=np.full(n, 300.0),
        cs_mm=zeros.copy(),
        amplitude_contrast=np.ones(n),
        phase_shift_deg=zeros.copy(),
    )


def draw_ctf(
    config: SimulationConfig, rng: np.random.Generator
) -> tuple[CTFParams, np.ndarray | None]:
    """Per-particle CTFs (rounded as the STAR file stores them) and the table rows used.

    ``config.ctf``: ``None``/``"none"`` (:func:`no_ctf`, rows ``None``), ``"ranges"`` (uniform
    draws, rows ``None``) or a table (rows drawn without replacement when there are enough, else
    with; ``ctf_rows="sequential"`` cycles through the table).
    """
    n = config.n
    if config.ctf is None or str(config.ctf).lower() == "none":
        return no_ctf(n), None
    if config.ctf == "ranges":
        c = ctf_mod.ctf_from_ranges(
            rng,
            n,
            config.defocus_range,
            config.astigmatism_range,
            config.voltage,
            config.cs,
            config.amplitude_contrast,
        )
        rows = None
    else:
        table = ctf_mod.load_ctf_table(config.ctf)
        n_rows = len(table.defocus_u_A)
        if config.ctf_rows == "sequential":
            rows = np.arange(n) % n_rows
        elif n <= n_rows:
            rows = np.sort(rng.choice(n_rows, size=n, replace=False))
            rows = rng.permutation(rows)
        else:
            rows = rng.integers(0, n_rows, size=n)
        c = table.subset(rows)
    c = ctf_mod.map_ctf(c, star_round)
    return c, rows


def draw_origins(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """RELION origins ``(n, 2)`` in Å: Gaussian (``shift_sigma``), uniform (``shift_max``) or 0."""
    n = config.n
    if config.shift_sigma > 0:
        origins = rng.normal(0.0, config.shift_sigma, size=(n, 2))
    elif config.shift_max > 0:
        origins = rng.uniform(-config.shift_max, config.shift_max, size=(n, 2))
    else:
        origins = np.zeros((n, 2))
    return star_round(origins)
