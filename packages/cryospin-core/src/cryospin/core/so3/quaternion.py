"""Unit quaternions ``(w, x, y, z)``, scalar first, to and from rotation matrices."""

from __future__ import annotations

import torch

from cryospin.core.so3._common import _check_float


def quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    """Quaternions ``(..., 4)`` ``(w, x, y, z)`` -> rotations ``(..., 3, 3)``.

    ``q`` is normalised first, so any non-zero 4-vector is accepted; ``q`` and ``-q`` give the same
    matrix. The matrix rotates column vectors: ``R v`` equals ``q v q*``.
    """
    _check_float(q, "q")
    if q.shape[-1] != 4:
        raise ValueError(f"quaternion input must have last dimension 4, got {tuple(q.shape)}")
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    return torch.stack(
        [
            torch.stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)], dim=-1),
            torch.stack([2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)], dim=-1),
            torch.stack([2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)], dim=-1),
        ],
        dim=-2,
    )


def rotation_to_quaternion(r: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` ``(w, x, y, z)`` with ``w >= 0``.

    Shepperd's method: the four candidate quaternions computed by dividing by ``4 w``, ``4 x``,
    ``4 y`` or ``4 z`` are formed and the one whose divisor is largest (at least 1/2 for a
    rotation) is kept, so the result is accurate for every angle, including 180 degrees.
    """
    _check_float(r, "r")
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation input must have trailing shape (3, 3), got {tuple(r.shape)}")
    m00, m01, m02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    m10, m11, m12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    m20, m21, m22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z.
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        dim=-1,
    )
    # Candidate i is row i divided by 2 sqrt(sq_i) = 4 |q_i|. The clamp only affects candidates
    # that are never selected (the selected sq is >= 1) and keeps their gradients finite.
    rows = torch.stack(
        [
            torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, sq[..., 1], m01 + m10, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m01 + m10, sq[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    denom = 2 * torch.sqrt(sq.clamp(min=0.1))
    candidates = rows / denom[..., None]
    best = torch.nn.functional.one_hot(sq.argmax(dim=-1), 4).to(r.dtype)
    q = (candidates * best[..., None]).sum(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return q * sign
