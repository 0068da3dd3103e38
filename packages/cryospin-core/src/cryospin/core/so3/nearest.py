"""The nearest rotation to a ``3 x 3`` matrix (orthogonal Procrustes), in float64 numpy.

The one function of :mod:`cryospin.core.so3` written in numpy rather than torch: its callers (the
pose and map evaluation, :mod:`cryospin.core.evaluation`) work in float64 numpy, and numpy's
LAPACK keeps their results bit for bit what they were.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def project_so3(m: Any) -> np.ndarray:
    """Nearest rotation ``(..., 3, 3)`` (Frobenius norm) to matrices ``m`` ``(..., 3, 3)``.

    With the SVD ``m = U S V^T``, returns ``U diag(1, 1, d) V^T``, ``d = sign det(U V^T)``
    (``d = +1`` where that determinant is 0): the orthogonal polar factor of ``m``, with the
    axis of the smallest singular value flipped where needed so that ``det = +1``. It is the
    rotation ``R`` maximising ``tr(R^T m)``; for ``m = sum_i a_i b_i^T`` it is the least-squares
    rotation taking the vectors ``b_i`` onto ``a_i`` (Kabsch), and for a sum of rotations their
    chordal mean. A rank-deficient ``m`` has no unique nearest rotation: one of them is returned.

    Rotations act on column vectors, as everywhere in :mod:`cryospin.core.so3`; the result does
    not depend on that convention (``project_so3(m^T) = project_so3(m)^T``).

    Args:
        m: ``(..., 3, 3)`` real matrices, numpy or anything :func:`numpy.asarray` takes (a torch
            tensor must be on the CPU and not require grad).

    Returns:
        float64 ``(..., 3, 3)`` rotations.

    Raises:
        ValueError: ``m`` is not ``(..., 3, 3)``.

    Source: W. Kabsch, Acta Cryst. A32 (1976) 922; the determinant fix of S. Umeyama,
    IEEE TPAMI 13 (1991) 376.
    """
    a = np.asarray(m, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise ValueError(f"project_so3 needs (..., 3, 3) matrices, got shape {a.shape}")
    u, _, vt = np.linalg.svd(a)
    d = np.sign(np.linalg.det(u @ vt))  # (...)
    flip = np.ones(a.shape[:-1])  # (..., 3): diag(1, 1, d)
    flip[..., 2] = np.where(d == 0, 1.0, d)
    return (u * flip[..., None, :]) @ vt
