"""SO(3) maths: pure, batched, differentiable torch functions.

Every function accepts any number of leading batch dimensions, float32 or float64, on any device,
and is differentiable by autograd (gradients stay finite at the singular points: zero angle for the
exponential and logarithm maps, gimbal lock for Euler angles). The exception is
:func:`project_so3`, batched float64 numpy for the (numpy) evaluation code.

Conventions (see ``interfaces.py`` and ``docs/CONVENTIONS.md`` items 7, 8 and 10):

* A rotation ``R`` is a ``(..., 3, 3)`` proper orthogonal matrix acting on **column** vectors
  (``x' = R x``). The pose of a particle is RELION's matrix ``A``, which maps map (volume)
  coordinates to image coordinates.
* Axis-angle vectors ``omega`` ``(..., 3)`` are in radians: ``exp_map(omega)`` rotates by
  ``|omega|`` counter-clockwise (right-hand rule) about ``omega / |omega|``,
  ``R = I + sin(t)/t [w]x + (1 - cos t)/t^2 [w]x^2`` (Rodrigues).
* Quaternions are ``(w, x, y, z)``, scalar first, unit norm; ``q`` and ``-q`` give the same
  rotation, and :func:`rotation_to_quaternion` returns the one with ``w >= 0``.
* RELION Euler angles ``(rlnAngleRot, rlnAngleTilt, rlnAnglePsi)`` are in degrees, ZYZ.
* cryoSPARC ``alignments3D/pose`` is an axis-angle vector in radians whose exponential map is the
  *transpose* of RELION's ``A``.

Modules: :mod:`~cryospin.core.so3.lie` (hat/vee, exp/log, S2S2),
:mod:`~cryospin.core.so3.quaternion`, :mod:`~cryospin.core.so3.metric` (random rotations, angles,
distances, in-plane rotations), :mod:`~cryospin.core.so3.nearest` (:func:`project_so3`, the nearest
rotation) and :mod:`~cryospin.core.so3.conventions` (RELION, cryoSPARC); import all from here.

Source: paper Supp. A (S2S2 to rotation; Rodrigues with Taylor expansions near zero); RELION
``src/euler.cpp`` (``Euler_angles2matrix``, ``Euler_matrix2angles``); cryoDRGN
``commands/parse_pose_csparc.py`` (cryoSPARC pose = ``expmap(pose).T``).
"""

from __future__ import annotations

from cryospin.core.so3.conventions import (
    cryosparc_pose_to_rotation,
    relion_euler_to_rotation,
    rotation_to_cryosparc_pose,
    rotation_to_relion_euler,
)
from cryospin.core.so3.lie import exp_map, hat, log_map, rotation_to_s2s2, s2s2_to_rotation, vee
from cryospin.core.so3.metric import (
    geodesic_distance_deg,
    inplane_rotation,
    random_rotations,
    rotation_angle,
)
from cryospin.core.so3.nearest import project_so3
from cryospin.core.so3.quaternion import quaternion_to_rotation, rotation_to_quaternion

__all__ = [
    "hat",
    "vee",
    "s2s2_to_rotation",
    "rotation_to_s2s2",
    "exp_map",
    "log_map",
    "quaternion_to_rotation",
    "rotation_to_quaternion",
    "random_rotations",
    "rotation_angle",
    "geodesic_distance_deg",
    "inplane_rotation",
    "project_so3",
    "relion_euler_to_rotation",
    "rotation_to_relion_euler",
    "cryosparc_pose_to_rotation",
    "rotation_to_cryosparc_pose",
]
