"""Haar-random rotations, rotation angles and geodesic distances, in-plane rotations."""

from __future__ import annotations

import torch

from cryospin.core.so3._common import _check_float, _rot_z
from cryospin.core.so3.lie import vee
from cryospin.core.so3.quaternion import quaternion_to_rotation


def random_rotations(
    n: int | tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Haar-uniform random rotations ``(*n, 3, 3)``.

    Drawn as normalised 4D standard Gaussian vectors (uniform on S^3, hence Haar on SO(3)) turned
    into matrices. Sampling is done in float64 on the generator's device, so a seeded
    ``torch.Generator`` gives the same rotations whatever ``dtype`` is asked for.
    """
    shape = (n,) if isinstance(n, int) else tuple(n)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    q = torch.randn((*shape, 4), generator=generator, dtype=torch.float64, device=gen_device)
    # A Gaussian 4-vector is exactly zero with probability 0; guard anyway.
    q = torch.where(
        torch.linalg.vector_norm(q, dim=-1, keepdim=True) > 1e-30,
        q,
        torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=q.dtype, device=q.device),
    )
    r = quaternion_to_rotation(q)
    return r.to(dtype=dtype, device=device if device is not None else gen_device)


def rotation_angle(r: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians, in ``[0, pi]``, of rotations ``(..., 3, 3)``.

    ``atan2(|vee(R - R^T)| , (tr R - 1) / 2)``: the sine part keeps full precision near 0, the
    cosine part near ``pi`` (``acos`` alone loses half the digits at both ends). Finite gradients
    everywhere, including the identity (where the gradient is taken as zero).
    """
    _check_float(r, "r")
    c = 0.5 * (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1)
    a = vee(r)
    s2 = (a * a).sum(-1)
    tiny = torch.finfo(r.dtype).tiny
    nonzero = s2 > tiny
    s = torch.where(nonzero, torch.sqrt(torch.where(nonzero, s2, torch.ones_like(s2))), 0 * s2)
    return torch.atan2(s, c)


def geodesic_distance_deg(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Geodesic distance in degrees, in ``[0, 180]``, between rotations ``(..., 3, 3)``.

    The angle of ``R1^T R2`` (:func:`rotation_angle`); broadcasts over leading dimensions. A metric
    on SO(3): symmetric, zero only for equal rotations, and obeys the triangle inequality.
    """
    return torch.rad2deg(rotation_angle(r1.transpose(-1, -2) @ r2))


def inplane_rotation(angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` about the z axis (the projection axis) by ``angle_deg`` degrees.

    Counter-clockwise (right-hand rule about +z) acting on column vectors:
    ``[[c, -s, 0], [s, c, 0], [0, 0, 1]]``. Composing a pose ``A`` as ``inplane_rotation(a) @ A``
    rotates the projection image counter-clockwise by ``a`` in the ``(x, y)`` image plane; in
    RELION terms ``relion_euler_to_rotation([rot, tilt, psi - a]) == inplane_rotation(a) @ A``.
    """
    angle_deg = torch.as_tensor(angle_deg)
    if not angle_deg.is_floating_point():
        angle_deg = angle_deg.to(torch.get_default_dtype())
    return _rot_z(torch.deg2rad(angle_deg))
