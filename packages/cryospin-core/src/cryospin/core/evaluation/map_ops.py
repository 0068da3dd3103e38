"""Map utilities of the map alignment: hand flip, Fourier crop, low-pass, trilinear resampling.

Conventions as in :mod:`cryospin.core.evaluation.align_maps`: cubic ``(D, D, D)`` maps
``[z, y, x]``, coordinates ``(x, y, z)`` in voxels from the centre voxel ``D // 2``;
:func:`rotate_map` returns ``out(x) = vol(R^T (x - t))`` by ``grid_sample`` with
``align_corners=True``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tnf

from cryospin.core.evaluation.arrays import as_numpy

__all__ = [
    "background_level",
    "flip_hand",
    "lowpass_gaussian",
    "radius_sq",
    "real_space_correlation",
    "rotate_map",
    "translation_search",
]


def as_map(vol: Any) -> np.ndarray:
    """Return a cubic map ``(D, D, D)`` as numpy (:func:`.arrays.as_numpy`).

    Raises:
        ValueError: ``vol`` is not a cubic 3D array.
    """
    arr = as_numpy(vol)
    if arr.ndim != 3 or len(set(arr.shape)) != 1:
        raise ValueError(f"a map must be a cubic (D, D, D) array, got shape {arr.shape}")
    return arr


def map_pair(ref: Any, moving: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return two cubic maps ``(D, D, D)`` as float64 numpy arrays (:func:`as_map`).

    Raises:
        ValueError: a map is not cubic, or the two differ in shape.
    """
    a = np.asarray(as_map(ref), dtype=np.float64)
    b = np.asarray(as_map(moving), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    return a, b


def flip_hand(vol: Any) -> Any:
    """Mirror a map ``z -> -z`` about the centre ``c = D // 2``: ``out[z] = vol[(2c - z) % D]``.

    For odd ``D`` this is ``vol[::-1]``; for even ``D`` the reversal is rolled by one voxel so that
    the centre ``D // 2`` stays fixed (the first plane, which has no mirror partner, maps onto
    itself). An involution. Numpy in, numpy out; torch in, torch out.
    """
    if isinstance(vol, torch.Tensor):
        flipped = torch.flip(vol, dims=(-3,))
        return torch.roll(flipped, 1, dims=-3) if vol.shape[-3] % 2 == 0 else flipped
    arr = np.asarray(vol)
    out = arr[::-1]
    return np.roll(out, 1, axis=0) if arr.shape[0] % 2 == 0 else out.copy()


def crop(vol: np.ndarray, box: int) -> np.ndarray:
    """Fourier-crop to ``box`` (:func:`cryospin.core.fourier.fourier_crop`; mean preserved).

    The real-space centre ``D // 2`` maps to ``box // 2``, so a shift of ``s`` voxels at size
    ``box`` is ``s * D / box`` voxels at size ``D``.
    """
    from cryospin.core.fourier import fourier_crop

    arr = np.asarray(vol, dtype=np.float64)
    if box >= arr.shape[0]:
        return arr.copy()
    return fourier_crop(torch.as_tensor(arr), box, ndim=3).numpy()


def lowpass_gaussian(vol: np.ndarray, sigma_per_voxel: float) -> np.ndarray:
    """Multiply the spectrum by ``exp(-f^2 / (2 sigma^2))``, ``f`` in cycles per voxel."""
    arr = np.asarray(vol, dtype=np.float64)
    freqs = [np.fft.fftfreq(n) for n in arr.shape]
    fz, fy, fx = np.meshgrid(*freqs, indexing="ij")
    g = np.exp(-(fx**2 + fy**2 + fz**2) / (2 * sigma_per_voxel**2))
    return np.fft.ifftn(np.fft.fftn(arr) * g).real


def grid_points(box: int, radius: float | None = None) -> torch.Tensor:
    """Voxel coordinates ``(x, y, z)`` from the centre, ``(P, 3)``, optionally in a sphere."""
    r = torch.arange(box, dtype=torch.float64) - box // 2
    z, y, x = torch.meshgrid(r, r, r, indexing="ij")
    pts = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
    if radius is not None:
        pts = pts[(pts * pts).sum(-1) <= radius * radius]
    return pts


def sample(vol: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``vol`` ``(D, D, D)`` at centred voxel coordinates ``(..., 3)``."""
    d = vol.shape[-1]
    g = (pts + d // 2) * (2.0 / (d - 1)) - 1.0
    out = tnf.grid_sample(
        vol[None, None],
        g.reshape(1, -1, 1, 1, 3).to(vol.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out.reshape(pts.shape[:-1])


def rotate_map(
    vol: Any,
    rotation: Any,
    shift_vox: Any = (0.0, 0.0, 0.0),
    *,
    flip: bool = False,
    fill: float = 0.0,
) -> np.ndarray:
    """Resample ``out(x) = vol(R^T (x - t))`` trilinearly; ``t`` in voxels ``(x, y, z)``.

    With ``flip=True`` the map is hand-flipped (:func:`flip_hand`) first. Points that fall
    outside the box read ``fill`` (e.g. the map's background level, :func:`background_level`).
    Returns float numpy with the input's floating dtype (float32 for integer input).
    """
    arr = as_map(vol)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    if flip:
        arr = flip_hand(arr)
    d = arr.shape[0]
    r = torch.as_tensor(np.asarray(rotation, dtype=np.float64))
    t = torch.as_tensor(np.asarray(shift_vox, dtype=np.float64))
    pts = grid_points(d)
    src = (pts - t) @ r  # row form of R^T (x - t)
    base = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float64)
    out = sample(base - fill, src) + fill if fill else sample(base, src)
    return out.reshape(d, d, d).numpy().astype(dtype)


def translation_search(ref: Any, moving: Any, subvoxel: bool = True) -> np.ndarray:
    """Find the translation ``t`` (voxels, ``(x, y, z)``) that best lays ``moving`` onto ``ref``.

    The peak of the circular cross-correlation ``c(s) = sum_x ref(x) moving(x - s)`` (maps minus
    their means): the integer peak from an FFT, then (``subvoxel``) refined to 0.01 voxel by
    evaluating ``c`` exactly (its Fourier series, separable matrix DFTs) on two successively finer
    grids around it (Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008), "efficient subpixel image
    registration").
    ``rotate_map(moving, I, t)`` then matches ``ref``. Shifts are wrapped to about
    ``[-D/2, D/2)``: meant for maps a fraction of the box apart.

    Raises:
        ValueError: the maps are not cubic or differ in shape.
    """
    a, b = map_pair(ref, moving)
    d = a.shape[0]
    cross = np.fft.fftn(a - a.mean()) * np.conj(np.fft.fftn(b - b.mean()))
    cc = np.fft.ifftn(cross).real
    peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
    peak = np.where(peak >= d - d // 2, peak - d, peak)  # signed, (z, y, x)
    k = np.fft.fftfreq(d) * d
    for step in (0.1, 0.01) if subvoxel else ():
        offsets = np.arange(-10, 11) * step
        grids = [np.exp(2j * np.pi * np.outer(p + offsets, k) / d) for p in peak]
        vals = np.einsum("zc,yb,xa,cba->zyx", *grids, cross, optimize=True).real
        best = np.unravel_index(int(np.argmax(vals)), vals.shape)
        peak = peak + offsets[list(best)]
    return peak[::-1].copy()  # (z, y, x) -> (x, y, z)


def radius_sq(d: int) -> np.ndarray:
    """Squared distance (integer voxels^2) of each voxel of a ``(d, d, d)`` box from ``d // 2``."""
    r = np.arange(d) - d // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    return x * x + y * y + z * z


def background_level(vol: Any) -> float:
    """Median of the voxels outside the sphere inscribed in the box (the solvent level)."""
    arr = np.asarray(as_map(vol), dtype=np.float64)
    d = arr.shape[0]
    outside = radius_sq(d) > (d / 2) ** 2
    return float(np.median(arr[outside])) if outside.any() else 0.0


def real_space_correlation(a: Any, b: Any, mask: Any | None = None) -> float:
    """Pearson correlation of two maps, over the voxels where ``mask > 0.5`` (all when ``None``)."""
    x = np.asarray(as_map(a), dtype=np.float64)
    y = np.asarray(as_map(b), dtype=np.float64)
    if mask is not None:
        keep = np.asarray(mask) > 0.5
        x, y = x[keep], y[keep]
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def centre_of_mass(vol: np.ndarray) -> np.ndarray:
    """Centre of mass ``(x, y, z)`` (voxels from the centre) of the density above the background.

    The background is the median outside the inscribed sphere; negative parts are ignored.
    """
    pts = grid_points(vol.shape[0]).numpy()
    w = np.clip(vol.reshape(-1) - background_level(vol), 0.0, None)
    if w.sum() <= 0:
        return np.zeros(3)
    return (pts * w[:, None]).sum(0) / w.sum()
