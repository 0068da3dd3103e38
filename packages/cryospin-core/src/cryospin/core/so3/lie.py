"""Lie-algebra maps and the S2S2 representation: ``hat``/``vee``, exp/log, 6D -> rotation.

Source: paper Supp. A (S2S2 construction; Rodrigues formula with Taylor series near 0).
"""

from __future__ import annotations

import torch

from cryospin.core.so3._common import _check_float, _small_threshold
from cryospin.core.so3.quaternion import rotation_to_quaternion


def hat(omega: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric cross-product matrix ``[omega]x`` ``(..., 3, 3)`` of ``omega`` ``(..., 3)``.

    ``hat(a) @ b == cross(a, b)`` for column vectors ``b``.
    """
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [
            torch.stack([zero, -z, y], dim=-1),
            torch.stack([z, zero, -x], dim=-1),
            torch.stack([-y, x, zero], dim=-1),
        ],
        dim=-2,
    )


def vee(m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat`: ``(..., 3, 3)`` -> ``(..., 3)``, from the antisymmetric part."""
    return 0.5 * torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]],
        dim=-1,
    )


# --------------------------------------------------------------------------------------------
# S2S2 (6D) representation
# --------------------------------------------------------------------------------------------


def s2s2_to_rotation(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """S2S2 6D vectors ``(..., 6)`` -> rotations ``(..., 3, 3)``, exactly as paper Supp. A.

    The 6D vector is split into two 3-vectors ``x[..., :3]`` and ``x[..., 3:]``, each normalised to
    ``v1`` and ``v2``; ``v3 = v1 x v2`` (normalised: the paper calls it a unit vector, which holds
    only when ``v1`` is orthogonal to ``v2``); ``v2' = v3 x v1``; and ``R = [v1, v2', v3]`` with the
    three vectors as **columns** (as the paper writes it). So ``R[..., :, 0]`` is the direction of
    the first half of the input and ``R[..., :, 2]`` is normal to both halves.

    ``eps`` guards the normalisations against zero-length (or parallel) inputs.
    """
    _check_float(x, "x")
    if x.shape[-1] != 6:
        raise ValueError(f"S2S2 input must have last dimension 6, got shape {tuple(x.shape)}")
    v1 = torch.nn.functional.normalize(x[..., :3], dim=-1, eps=eps)
    v2 = torch.nn.functional.normalize(x[..., 3:], dim=-1, eps=eps)
    v3 = torch.nn.functional.normalize(torch.linalg.cross(v1, v2, dim=-1), dim=-1, eps=eps)
    v2 = torch.linalg.cross(v3, v1, dim=-1)
    return torch.stack([v1, v2, v3], dim=-1)


def rotation_to_s2s2(r: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` -> 6D vectors ``(..., 6)``: the first two columns, concatenated.

    Inverse of :func:`s2s2_to_rotation` on rotations.
    """
    return torch.cat([r[..., :, 0], r[..., :, 1]], dim=-1)


# --------------------------------------------------------------------------------------------
# Exponential and logarithm maps
# --------------------------------------------------------------------------------------------


def _rodrigues_coefficients(theta2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sin(t)/t`` and ``(1 - cos t)/t^2`` as functions of ``theta2 = t^2``, smooth at 0.

    Below the threshold the Taylor series in ``t^2`` (paper Supp. A) are used; above it the closed
    forms, with ``1 - cos t`` written as ``2 sin^2(t/2)`` to avoid cancellation. The unused branch
    is evaluated at a safe argument so that no NaN or inf reaches the gradient through
    ``torch.where``.
    """
    small = theta2 < _small_threshold(theta2.dtype)
    x = torch.where(small, theta2, torch.zeros_like(theta2))
    a_taylor = 1 - x / 6 * (1 - x / 20 * (1 - x / 42 * (1 - x / 72)))
    b_taylor = 0.5 * (1 - x / 12 * (1 - x / 30 * (1 - x / 56 * (1 - x / 90))))
    t = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a_exact = torch.sin(t) / t
    half = torch.sin(0.5 * t) / t
    b_exact = 2 * half * half
    return torch.where(small, a_taylor, a_exact), torch.where(small, b_taylor, b_exact)


def exp_map(omega: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors ``(..., 3)`` (radians) -> rotations ``(..., 3, 3)`` (Rodrigues).

    ``R = I + A(t) [omega]x + B(t) [omega]x^2`` with ``t = |omega|``, ``A = sin(t)/t`` and
    ``B = (1 - cos t)/t^2``. ``A`` and ``B`` are evaluated as functions of ``t^2`` (never of ``t``,
    whose derivative is singular at 0), by their Taylor series for small ``t`` (paper Supp. A), so
    values and gradients are exact and finite at and near ``omega = 0``; at 0 the Jacobian is
    ``dR/domega_i = [e_i]x``.
    """
    _check_float(omega, "omega")
    if omega.shape[-1] != 3:
        raise ValueError(f"axis-angle input must have last dimension 3, got {tuple(omega.shape)}")
    theta2 = (omega * omega).sum(-1)
    a, b = _rodrigues_coefficients(theta2)
    k = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def log_map(r: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` -> axis-angle vectors ``(..., 3)`` with ``|omega|`` in ``[0, pi]``.

    Computed through the quaternion (Shepperd's method picks the best-conditioned component), so it
    is accurate near 0 (``omega ~ vee(R - R^T)/2``) and near ``pi`` (the axis comes from the
    symmetric part), where the textbook ``acos((tr R - 1)/2)`` loses half the digits. At exactly
    ``pi`` the sign of ``omega`` is arbitrary (both are correct). Differentiable, with finite
    gradients at the identity.
    """
    q = rotation_to_quaternion(r)
    w = q[..., 0]
    v = q[..., 1:]
    s2 = (v * v).sum(-1)
    # omega = v * 2 atan2(s, w) / s with s = |v|, w >= 0. Near s = 0 use the series of
    # atan(u)/u in z = u^2 = s^2 / w^2 (w ~ 1 there, so the division is safe).
    small = s2 < _small_threshold(r.dtype) * 0.25
    w_safe = torch.where(small, w, torch.ones_like(w))
    z = torch.where(small, s2 / (w_safe * w_safe), torch.zeros_like(s2))
    # atan(u)/u = sum_k (-z)^k / (2k + 1); truncation error z^7 / 15 (< 1e-18 here in float64).
    series = 1 - z * (1 / 3 - z * (1 / 5 - z * (1 / 7 - z * (1 / 9 - z * (1 / 11 - z / 13)))))
    f_taylor = 2 / w_safe * series
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    f_exact = 2 * torch.atan2(s, w) / s
    f = torch.where(small, f_taylor, f_exact)
    return v * f[..., None]
