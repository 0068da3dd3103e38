"""Private helpers shared by the :mod:`cryospin.core.so3` modules."""

from __future__ import annotations

import torch


def _small_threshold(dtype: torch.dtype) -> float:
    """Squared-angle threshold below which Taylor series replace ``sin(t)/t`` and friends.

    The series below are truncated after the ``t^8`` term, so their relative error is about
    ``t^10 / 4e7``: 2.5e-18 at ``t = 0.1`` (float64) and 2.4e-11 at ``t = 0.5`` (float32). Above
    the threshold the closed forms (and their autograd derivatives, which cancel like
    ``eps / t^2``) are accurate to about 1e-14 (float64) and 4e-7 (float32).
    """
    return 1e-2 if dtype == torch.float64 else 0.25


def _check_float(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _rot_z(t: torch.Tensor) -> torch.Tensor:
    """Active rotation by ``t`` radians about z (column vectors)."""
    c, s = torch.cos(t), torch.sin(t)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    return torch.stack(
        [
            torch.stack([c, -s, zero], dim=-1),
            torch.stack([s, c, zero], dim=-1),
            torch.stack([zero, zero, one], dim=-1),
        ],
        dim=-2,
    )


def _rot_y(t: torch.Tensor) -> torch.Tensor:
    """Active rotation by ``t`` radians about y (column vectors)."""
    c, s = torch.cos(t), torch.sin(t)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    return torch.stack(
        [
            torch.stack([c, zero, s], dim=-1),
            torch.stack([zero, one, zero], dim=-1),
            torch.stack([-s, zero, c], dim=-1),
        ],
        dim=-2,
    )
