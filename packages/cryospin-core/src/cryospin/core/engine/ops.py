"""The numerical operations the engine needs, from the core maths modules (one place to look).

Conventions (``interfaces.py``): centred transforms with DC at ``L // 2``; the CTF of
:func:`cryospin.core.ctf.ctf_from_params` (RELION/cryoDRGN formula, astigmatism included); shifts
``(x, y)`` in pixels translate the image content (:func:`cryospin.core.slicing.phase_ramp`).
"""

from __future__ import annotations

import torch

from cryospin.core.ctf import ctf_from_params
from cryospin.core.fourier import fft2_centered, ifft2_centered
from cryospin.core.fourier import radius_grid as _radius_grid
from cryospin.core.particles import CTFParams
from cryospin.core.slicing import phase_ramp
from cryospin.core.so3 import exp_map, geodesic_distance_deg

__all__ = [
    "compute_ctf",
    "exp_map",
    "fft2_centered",
    "geodesic_distance_deg",
    "ifft2_centered",
    "phase_ramp",
    "radius_grid",
]


def radius_grid(box: int) -> torch.Tensor:
    """``(L, L)`` distance in Fourier pixels from the DC sample ``(L // 2, L // 2)``."""
    return _radius_grid(box, 2)


def compute_ctf(
    ctf: CTFParams, box: int, pixel_size_A: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """CTF images ``(n, L, L)`` on the centred frequency grid for the particles in ``ctf``."""
    return ctf_from_params(ctf, box, pixel_size_A, dtype=dtype)
