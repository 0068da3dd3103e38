"""Pose conventions of other programs: RELION Euler angles and cryoSPARC axis-angle poses.

Source: RELION ``src/euler.cpp`` (``Euler_angles2matrix``, ``Euler_matrix2angles``) and the RELION
"Conventions" documentation; cryoDRGN ``commands/parse_pose_csparc.py``.
"""

from __future__ import annotations

import math

import torch

from cryospin.core.so3._common import _check_float, _rot_y, _rot_z
from cryospin.core.so3.lie import exp_map, log_map


def relion_euler_to_rotation(euler_deg: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles ``(..., 3)`` = ``(rot, tilt, psi)`` in degrees -> RELION's ``A``.

    ``A`` is the matrix of RELION's ``Euler_angles2matrix`` (``src/euler.cpp``), e.g.
    ``A[0, 0] = cos psi cos tilt cos rot - sin psi sin rot`` and ``A[2] = (sin tilt cos rot,
    sin tilt sin rot, cos tilt)``. It maps map coordinates to image coordinates (column vectors)
    and equals ``Rz(-psi) Ry(-tilt) Rz(-rot)`` in terms of active (counter-clockwise) rotations;
    equivalently ``A^T = Rz(rot) Ry(tilt) Rz(psi)``, i.e. ``A`` is the transpose of scipy's
    ``Rotation.from_euler('ZYZ', [rot, tilt, psi], degrees=True).as_matrix()``.
    """
    _check_float(euler_deg, "euler_deg")
    if euler_deg.shape[-1] != 3:
        raise ValueError(f"Euler input must have last dimension 3, got {tuple(euler_deg.shape)}")
    rot, tilt, psi = torch.deg2rad(euler_deg).unbind(-1)
    return _rot_z(-psi) @ _rot_y(-tilt) @ _rot_z(-rot)


def rotation_to_relion_euler(r: torch.Tensor) -> torch.Tensor:
    """RELION's ``A`` ``(..., 3, 3)`` -> Euler angles ``(..., 3)`` ``(rot, tilt, psi)`` in degrees.

    Ranges: ``rot`` and ``psi`` in ``(-180, 180]``, ``tilt`` in ``[0, 180]``, as RELION's
    ``Euler_matrix2angles``. Gimbal lock (``sin tilt`` below ``16 * FLT_EPSILON``, RELION's own
    threshold, or ``1e-12`` in float64): ``rot = 0`` and the whole z rotation goes to ``psi``, as
    RELION does for both ``tilt = 0`` and ``tilt = 180``.

    Near (not at) gimbal lock ``rot`` and ``psi`` are individually ill-conditioned, but their sum
    (``tilt < 90``) or difference (``tilt > 90``) is not: ``rot`` comes from the third row of ``A``
    (``atan2(A21, A20)``, RELION's formula) and ``psi`` from the well-conditioned combination of
    the upper-left 2x2 block, so the angles always reproduce ``A`` to rounding error.
    """
    _check_float(r, "r")
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation input must have trailing shape (3, 3), got {tuple(r.shape)}")
    a00, a01, a02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    a10, a11, a12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    a20, a21, a22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    sb2 = 0.5 * (a02 * a02 + a12 * a12 + a20 * a20 + a21 * a21)
    thresh = 1e-12 if r.dtype == torch.float64 else 16 * float(torch.finfo(torch.float32).eps)
    regular = sb2 > thresh * thresh
    one = torch.ones_like(sb2)
    sb = torch.sqrt(torch.where(regular, sb2, one))
    sb = torch.where(regular, sb, torch.zeros_like(sb2))
    tilt = torch.atan2(sb, a22)
    # rot from the third row (sin tilt (cos rot, sin rot)); 0 at gimbal lock. Safe arguments keep
    # atan2's gradient (which is 0/0 at the origin) out of the masked branch.
    rot = torch.where(
        regular,
        torch.atan2(torch.where(regular, a21, 0 * one), torch.where(regular, a20, one)),
        0 * one,
    )
    # (1 + cos tilt) (cos, sin)(rot + psi) = (a00 + a11, a01 - a10)
    # (1 - cos tilt) (cos, sin)(rot - psi) = (a11 - a00, -(a01 + a10))
    upper = a22 >= 0
    plus = torch.where(upper, a00 + a11, one)
    plus_s = torch.where(upper, a01 - a10, 0 * one)
    minus = torch.where(upper, one, a11 - a00)
    minus_s = torch.where(upper, 0 * one, -(a01 + a10))
    psi = torch.where(upper, torch.atan2(plus_s, plus) - rot, rot - torch.atan2(minus_s, minus))
    psi = torch.remainder(psi + math.pi, 2 * math.pi) - math.pi
    # Wrap rot and psi into (-180, 180] in degrees (atan2 and rounding can land on -180 exactly).
    rot_deg, psi_deg = torch.rad2deg(rot), torch.rad2deg(psi)
    rot_deg = torch.where(rot_deg <= -180, rot_deg + 360, rot_deg)
    psi_deg = torch.where(psi_deg <= -180, psi_deg + 360, psi_deg)
    return torch.stack([rot_deg, torch.rad2deg(tilt), psi_deg], dim=-1)


def cryosparc_pose_to_rotation(pose: torch.Tensor) -> torch.Tensor:
    """Map cryoSPARC ``alignments3D/pose`` axis-angles ``(..., 3)`` (radians) to RELION's ``A``.

    The exponential map of the pose is the transpose of RELION's ``A`` (cryoDRGN's
    ``parse_pose_csparc.py`` applies ``expmap(pose)`` then ``.T`` to reach the same matrices as
    its RELION reader), so ``A = exp_map(pose)^T = exp_map(-pose)``. Poses with ``|pose| > pi``
    (which cryoSPARC writes) are fine.
    """
    return exp_map(pose).transpose(-1, -2)


def rotation_to_cryosparc_pose(r: torch.Tensor) -> torch.Tensor:
    """RELION's ``A`` ``(..., 3, 3)`` -> cryoSPARC axis-angle pose ``(..., 3)``, ``|pose| <= pi``.

    Inverse of :func:`cryosparc_pose_to_rotation`: ``pose = log_map(A^T)``.
    """
    return log_map(r.transpose(-1, -2))
