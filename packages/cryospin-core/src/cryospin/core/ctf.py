"""Contrast transfer function (RELION / cryoDRGN formula with astigmatism) on the centred grid.

Formula (docs/CONVENTIONS.md item 12; RELION ``CTF::initialise``/``getGamma``, cryoDRGN
``ctf.compute_ctf``), for a spatial frequency ``k = (kx, ky)`` in 1/Å with ``s = |k|`` and
azimuth ``theta = atan2(ky, kx)`` (x = column axis, y = row axis of the centred grid):

* wavelength ``lambda = 12.2639 / sqrt(V + 0.97845e-6 V^2)`` Å, ``V`` in volts (relativistic);
* local defocus ``df = 0.5 (dfU + dfV) + 0.5 (dfU - dfV) cos(2 (theta - dfAng))``, defoci in Å
  (positive = underfocus), ``dfAng`` in degrees;
* ``gamma = 2 pi (-0.5 df lambda s^2 + 0.25 Cs lambda^3 s^4) - phase_shift``, ``Cs`` in mm
  converted to Å (x 1e7), phase shift in degrees converted to radians;
* ``CTF = sqrt(1 - w^2) sin(gamma) - w cos(gamma)``, ``w`` the amplitude contrast;
* optional envelope ``exp(-B s^2 / 4)`` (B-factor in Å^2, RELION's ``K4 = -Bfac / 4``).

**Overall sign.** This is cryoDRGN's sign: ``CTF(0) = -w`` and, for underfocus, the CTF is
negative at low frequency, so a positive (protein-bright) potential projects to a dark particle, as
in raw micrographs. RELION's ``CTF::getCTF`` returns ``-sin(gamma - atan(w / sqrt(1 - w^2)))``,
which is exactly the *negative* of this (RELION works on contrast-inverted, protein-white images).
RELION's wavelength constants (12.2643247, 0.978466e-6) differ from these in the 5th digit.

The frequency grid is the centred FFT's (:func:`cryospin.core.fourier.freq_grid`):
``(arange(L) - L // 2) / (L * apix)``, DC at ``L // 2``; outputs are ``[ky, kx]``.
All functions are pure, batched (per-particle parameters broadcast over a leading axis) and
differentiable in every parameter; float32/float64, CPU/CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryospin.core.fourier import freq_grid
from cryospin.core.particles import CTFParams

__all__ = [
    "wavelength_A",
    "compute_ctf",
    "compute_ctf_grid",
    "ctf_from_params",
]

TensorLike = torch.Tensor | float | np.ndarray


def wavelength_A(voltage_kV: TensorLike) -> torch.Tensor:
    """Relativistic electron wavelength in Å: ``12.2639 / sqrt(V + 0.97845e-6 V^2)``, V in volts.

    300 kV -> 0.019688 Å; 200 kV -> 0.025079 Å.
    """
    if not isinstance(voltage_kV, torch.Tensor):
        voltage_kV = torch.as_tensor(voltage_kV, dtype=torch.float64)
    v = voltage_kV * 1e3
    return 12.2639 / torch.sqrt(v + 0.97845e-6 * v * v)


def _param(x: TensorLike | None, like: torch.Tensor, extra_dims: int) -> torch.Tensor | None:
    """Parameter as a tensor of ``like``'s dtype/device with ``extra_dims`` trailing unit axes."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        t = x.to(device=like.device, dtype=like.dtype)
    else:  # python floats / numpy arrays: convert straight to the target dtype (no float32 hop)
        t = torch.as_tensor(np.asarray(x, dtype=np.float64), device=like.device).to(like.dtype)
    return t.reshape(*t.shape, *([1] * extra_dims))


def compute_ctf(
    freqs: torch.Tensor,
    defocus_u_A: TensorLike,
    defocus_v_A: TensorLike,
    defocus_angle_deg: TensorLike,
    voltage_kV: TensorLike,
    cs_mm: TensorLike,
    amplitude_contrast: TensorLike,
    phase_shift_deg: TensorLike = 0.0,
    bfactor_A2: TensorLike | None = None,
) -> torch.Tensor:
    """CTF at arbitrary frequencies (module docstring formula and sign).

    Args:
        freqs: ``(*grid, 2)`` frequencies ``(kx, ky)`` in 1/Å (e.g. :func:`freq_grid`).
        defocus_u_A: defocus U in Å (positive = underfocus), scalar or ``(*batch,)``.
        defocus_v_A: defocus V in Å, scalar or ``(*batch,)``.
        defocus_angle_deg: astigmatism azimuth ``dfAng`` in degrees (from the x axis).
        voltage_kV: acceleration voltage in kV.
        cs_mm: spherical aberration in mm.
        amplitude_contrast: ``w`` in [0, 1].
        phase_shift_deg: phase-plate shift in degrees.
        bfactor_A2: optional B-factor in Å^2 for the envelope ``exp(-B s^2 / 4)``.

    Returns:
        ``(*batch, *grid)`` real CTF values in ``freqs``'s dtype/device (all parameters must
        broadcast to one ``batch`` shape).
    """
    grid_dims = freqs.dim() - 1
    kx, ky = freqs[..., 0], freqs[..., 1]
    s2 = kx * kx + ky * ky
    theta = torch.atan2(ky, kx)

    def p(x: TensorLike) -> torch.Tensor:
        out = _param(x, freqs, grid_dims)
        assert out is not None
        return out

    du, dv = p(defocus_u_A), p(defocus_v_A)
    ang = torch.deg2rad(p(defocus_angle_deg))
    lam = wavelength_A(p(voltage_kV))
    cs = p(cs_mm) * 1e7
    w = p(amplitude_contrast)
    ps = torch.deg2rad(p(phase_shift_deg))
    df = 0.5 * (du + dv) + 0.5 * (du - dv) * torch.cos(2.0 * (theta - ang))
    gamma = 2.0 * math.pi * (-0.5 * df * lam * s2 + 0.25 * cs * lam**3 * s2 * s2) - ps
    ctf = torch.sqrt(1.0 - w * w) * torch.sin(gamma) - w * torch.cos(gamma)
    b = _param(bfactor_A2, freqs, grid_dims)
    if b is not None:
        ctf = ctf * torch.exp(-b * s2 / 4.0)
    return ctf


def compute_ctf_grid(
    box: int,
    pixel_size_A: float,
    defocus_u_A: TensorLike,
    defocus_v_A: TensorLike,
    defocus_angle_deg: TensorLike,
    voltage_kV: TensorLike,
    cs_mm: TensorLike,
    amplitude_contrast: TensorLike,
    phase_shift_deg: TensorLike = 0.0,
    bfactor_A2: TensorLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """CTF images ``(*batch, L, L)`` ``[ky, kx]`` on the centred FFT grid (DC at ``L // 2``).

    Frequencies ``(arange(L) - L // 2) / (L * pixel_size_A)`` in 1/Å; parameters as in
    :func:`compute_ctf` (units: Å, degrees, kV, mm, Å^2).
    """
    k = freq_grid(box, pixel_size_A, 2, dtype=dtype, device=device)
    return compute_ctf(
        k,
        defocus_u_A,
        defocus_v_A,
        defocus_angle_deg,
        voltage_kV,
        cs_mm,
        amplitude_contrast,
        phase_shift_deg,
        bfactor_A2,
    )


def ctf_from_params(
    params: CTFParams,
    box: int,
    pixel_size_A: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """CTF images ``(N, L, L)`` for every particle of a :class:`~cryospin.core.particles.CTFParams`.

    Computed in float64 and cast to ``dtype``; the B-factor envelope is applied when
    ``params.bfactor_A2`` is set. Use ``params.subset(idx)`` for a batch.
    """

    def t(a: np.ndarray | None) -> torch.Tensor | None:
        if a is None:
            return None
        return torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1), device=device)

    out = compute_ctf_grid(
        box,
        pixel_size_A,
        t(params.defocus_u_A),  # type: ignore[arg-type]
        t(params.defocus_v_A),  # type: ignore[arg-type]
        t(params.defocus_angle_deg),  # type: ignore[arg-type]
        t(params.voltage_kV),  # type: ignore[arg-type]
        t(params.cs_mm),  # type: ignore[arg-type]
        t(params.amplitude_contrast),  # type: ignore[arg-type]
        t(params.phase_shift_deg),  # type: ignore[arg-type]
        t(params.bfactor_A2),
        dtype=torch.float64,
        device=device,
    )
    return out.to(dtype)
