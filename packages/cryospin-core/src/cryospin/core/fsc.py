"""Fourier shell correlation between two maps and the resolution at a threshold.

* Shells: :func:`cryospin.core.fourier.shell_index`, ``round(|k|)`` in Fourier pixels from DC
  (index ``D // 2`` of the centred 3D FFT). Shell ``s`` has spatial frequency ``s / (D * apix)``
  1/Å; shells ``0 .. D // 2`` are returned (DC up to Nyquist; the corners beyond are ignored).
* ``FSC(s) = Re sum F1 conj(F2) / sqrt(sum |F1|^2 sum |F2|^2)`` over the voxels of shell ``s``.
* Resolution (docs/CONVENTIONS.md item 16): the first shell (from shell 1 on) whose FSC drops below
  the threshold, linearly interpolated in spatial frequency between it and the shell before; the
  resolution in Å is ``1 / frequency``. Use 0.143 between independent half-maps and 0.5 against a
  known truth. Half-maps from ab initio must be aligned (frame and hand) first (item 17).

Sources: van Heel & Schatz (2005) on FSC; Rosenthal & Henderson (2003) for 0.143; RELION
postprocessing conventions.
"""

from __future__ import annotations

import math

import torch

from cryospin.core.fourier import fft3_centered, shell_index

__all__ = ["fsc", "shell_frequencies", "resolution_at_threshold"]


def fsc(
    map1: torch.Tensor,
    map2: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-30,
) -> torch.Tensor:
    """Fourier shell correlation of two real maps.

    Args:
        map1: real ``(..., D, D, D)`` map ``[z, y, x]`` (leading batch axes allowed).
        map2: real map of the same shape.
        mask: optional real ``(D, D, D)`` (or broadcastable) real-space mask applied to both maps
            before the transform (a "masked" FSC); ``None`` gives the unmasked FSC.
        eps: guards the denominator of empty or all-zero shells (their FSC is 0).

    Returns:
        ``(..., D // 2 + 1)`` FSC per shell, shell ``s`` at frequency ``s / (D * apix)``
        (:func:`shell_frequencies`). Differentiable.
    """
    if map1.shape != map2.shape:
        raise ValueError(f"map shapes differ: {tuple(map1.shape)} vs {tuple(map2.shape)}")
    D = map1.shape[-1]
    if map1.shape[-3:] != (D, D, D):
        raise ValueError(f"maps must be (..., D, D, D), got {tuple(map1.shape)}")
    if mask is not None:
        map1 = map1 * mask
        map2 = map2 * mask
    f1 = fft3_centered(map1)
    f2 = fft3_centered(map2)
    n = D // 2 + 1
    idx = shell_index(D, 3, device=map1.device).reshape(-1)
    keep = idx < n
    idx = idx[keep]

    def shell_sum(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[:-3], -1)[..., keep]
        out = torch.zeros(*flat.shape[:-1], n, dtype=flat.dtype, device=flat.device)
        return out.index_add(-1, idx, flat)

    cross = shell_sum((f1 * f2.conj()).real)
    p1 = shell_sum(f1.real**2 + f1.imag**2)
    p2 = shell_sum(f2.real**2 + f2.imag**2)
    return cross / torch.sqrt(p1 * p2).clamp_min(eps)


def shell_frequencies(
    box: int,
    pixel_size_A: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(D // 2 + 1,)`` spatial frequency of each FSC shell in 1/Å: ``s / (D * apix)``."""
    s = torch.arange(box // 2 + 1, dtype=torch.float64, device=device)
    return (s / (box * pixel_size_A)).to(dtype)


def resolution_at_threshold(
    curve: torch.Tensor,
    box: int,
    pixel_size_A: float,
    threshold: float = 0.143,
) -> float:
    """Resolution in Å where an FSC curve first drops below ``threshold``.

    Args:
        curve: ``(n,)`` FSC per shell as returned by :func:`fsc` (shell ``s`` at
            ``s / (box * apix)`` 1/Å).
        box: map side ``D`` in pixels.
        pixel_size_A: voxel size in Å.
        threshold: e.g. 0.143 (half-maps) or 0.5 (against a truth).

    Returns:
        ``1 / f`` in Å, where ``f`` interpolates linearly between the last shell at or above the
        threshold and the first shell below it (the first crossing, searched from shell 1). If
        the curve never drops below the threshold the Nyquist-limited value ``1 / f_last`` of the
        last shell is returned (``2 * apix`` when the curve reaches Nyquist); if shell 1 is
        already below, the crossing is interpolated between shells 0 and 1.
    """
    c = curve.detach().to("cpu", torch.float64).reshape(-1)
    freqs = shell_frequencies(box, pixel_size_A)[: c.numel()]
    below = torch.nonzero(c[1:] < threshold).reshape(-1)
    if below.numel() == 0:
        return float(1.0 / freqs[-1])
    i = int(below[0]) + 1
    c0, c1 = float(c[i - 1]), float(c[i])
    f0, f1 = float(freqs[i - 1]), float(freqs[i])
    t = 1.0 if c0 == c1 else (c0 - threshold) / (c0 - c1)
    t = min(max(t, 0.0), 1.0)
    f = f0 + t * (f1 - f0)
    return math.inf if f <= 0.0 else 1.0 / f
