"""NumPy front-ends to the SO(3) conversions of :mod:`cryospin.core.so3` used by the readers.

Rotations are RELION's matrix ``A`` (map -> image coordinates, column vectors), float64.
"""

from __future__ import annotations

import numpy as np
import torch

from cryospin.core import so3


def euler_to_rotations(rot: np.ndarray, tilt: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Convert RELION ``(rlnAngleRot, rlnAngleTilt, rlnAnglePsi)`` (degrees) to ``A``."""
    euler = torch.as_tensor(np.stack([rot, tilt, psi], axis=-1), dtype=torch.float64)
    return so3.relion_euler_to_rotation(euler).numpy()


def rotations_to_euler(rotations: np.ndarray) -> np.ndarray:
    """Convert ``A`` ``(N, 3, 3)`` to RELION Euler angles ``(N, 3)`` (rot, tilt, psi), degrees."""
    r = torch.as_tensor(np.asarray(rotations), dtype=torch.float64)
    return so3.rotation_to_relion_euler(r).numpy()


def cryosparc_to_rotations(pose: np.ndarray) -> np.ndarray:
    """Convert cryoSPARC axis-angle poses ``(N, 3)`` (radians) to ``A`` ``(N, 3, 3)``."""
    p = torch.as_tensor(np.asarray(pose), dtype=torch.float64)
    return so3.cryosparc_pose_to_rotation(p).numpy()


def rotations_to_cryosparc(rotations: np.ndarray) -> np.ndarray:
    """Convert ``A`` ``(N, 3, 3)`` to cryoSPARC axis-angle poses ``(N, 3)`` (radians)."""
    r = torch.as_tensor(np.asarray(rotations), dtype=torch.float64)
    return so3.rotation_to_cryosparc_pose(r).numpy()
