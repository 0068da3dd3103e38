"""Central slices of centred 3D Fourier/Hartley grids, their adjoint (insertion), and phase shifts.

Conventions (see :mod:`cryospin.core.interfaces` and :mod:`cryospin.core.fourier`):

* A volume grid is ``(D, D, D)`` indexed ``[kz, ky, kx]`` with DC at index ``D // 2`` on every
  axis (the layout of :func:`cryospin.core.fourier.fft3_centered`); it may be real (a Hartley
  grid, or any real-valued Fourier-space quantity) or complex (a Fourier grid). The functions here
  are linear in the grid values and do not care which.
* A slice is ``(L, L)`` indexed ``[ky, kx]``, DC at ``L // 2``; pixel ``[i, j]`` is the 2D
  frequency ``k = (j - L//2, i - L//2, 0)`` in Fourier pixels (x first).
* **Pose action.** ``R`` is RELION's matrix A (map -> image coordinates, column vectors). The
  slice of pose ``R`` samples the volume at ``R^T k``, i.e. at the row vector ``k @ R``
  (cryoDRGN ``gen_slice``, the paper's ``decoders.py``; docs/CONVENTIONS.md item 7). With
  ``oversampling = s`` the sample point is ``s * (k @ R)`` (for a volume zero-padded by ``s`` in
  real space before its transform, so that slice pixels keep the unpadded frequency spacing).
* **Interpolation.** Trilinear, via ``torch.nn.functional.grid_sample(align_corners=True)``
  with the voxel-index position ``p = k @ R + D // 2`` mapped to ``2 p / (D - 1) - 1``, so that
  integer index ``i`` is exactly voxel ``i`` (DC stays at DC; docs/CONVENTIONS.md item 4). The
  grid's last axis is ``(x, y, z)`` for a ``[z, y, x]`` volume. Samples outside the grid read zeros
  (``padding_mode="zeros"``; a point within one voxel of the border interpolates towards 0).
  Linear interpolation in Fourier space is inexact without oversampling (docs/CONVENTIONS.md
  item 6).

:func:`extract_points` and :func:`phase_ramp_points` compute the same values at chosen in-plane
frequencies only (a frequency mask's pixels), when only those are needed (the training loss).

Everything is batched over rotations, works in float32/float64 on CPU/CUDA, and is differentiable
with respect to the volume, the slices and the rotations.

Sources: Fourier slice theorem; RELION "Conventions" (matrix A); cryoDRGN ``lattice``/``models``
slicing; PyTorch ``grid_sample`` documentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "slice_coordinates",
    "point_coordinates",
    "mask_frequencies",
    "extract_central_slices",
    "extract_points",
    "insert_central_slices",
    "phase_ramp",
    "phase_ramp_points",
    "phase_shift",
]


def point_coordinates(
    rotations: torch.Tensor, freqs: torch.Tensor, oversampling: float = 1.0
) -> torch.Tensor:
    """Positions ``s * (k @ R)`` of in-plane frequencies ``k = (kx, ky, 0)``, ``(..., P, 3)``.

    Args:
        rotations: ``(..., 3, 3)`` RELION A matrices.
        freqs: ``(P, 2)`` in-plane frequencies ``(kx, ky)`` in Fourier pixels relative to DC.
        oversampling: factor ``s`` applied to the frequencies (Fourier pixels of the volume per
            Fourier pixel of the slice).

    Returns:
        ``(..., P, 3)`` positions ``(x, y, z)`` in Fourier pixels relative to DC, in the
        rotations' dtype.
    """
    k2 = freqs.to(dtype=rotations.dtype, device=rotations.device) * oversampling
    # k @ R with k = (kx, ky, 0): only the first two rows of R contribute.
    return torch.einsum("pa,...ab->...pb", k2, rotations[..., :2, :])


def mask_frequencies(mask: torch.Tensor) -> torch.Tensor:
    """Frequencies ``(kx, ky)`` of a boolean ``(c, c)`` mask's pixels, ``(P, 2)`` integer.

    ``mask`` is indexed ``[ky, kx]`` with DC at ``c // 2`` (the slice layout above); the pixels
    come in row-major order, the order of ``x[..., mask]``.
    """
    return (mask.nonzero() - mask.shape[-1] // 2).flip(-1)


def slice_coordinates(rotations: torch.Tensor, box: int, oversampling: float = 1.0) -> torch.Tensor:
    """Frequency positions ``s * (k @ R)`` of a central slice, ``(..., L, L, 3)`` as ``(x, y, z)``.

    Args:
        rotations: ``(..., 3, 3)`` RELION A matrices.
        box: slice side ``L``.
        oversampling: factor ``s`` applied to the 2D frequencies (Fourier pixels of the volume
            per Fourier pixel of the slice).

    Returns:
        ``(..., L, L, 3)`` positions in Fourier pixels relative to DC, in the rotations' dtype
        (:func:`point_coordinates` of the ``L x L`` grid, row-major).
    """
    f = torch.arange(box, dtype=rotations.dtype, device=rotations.device) - box // 2
    ky, kx = torch.meshgrid(f, f, indexing="ij")
    k2 = torch.stack([kx, ky], -1).reshape(-1, 2)  # (L*L, 2), z component is 0
    pos = point_coordinates(rotations, k2, oversampling)
    return pos.reshape(*rotations.shape[:-2], box, box, 3)


def _to_channels(volume: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(D, D, D)`` real/complex -> ``(1, C, D, D, D)`` real, C = 1 or 2 (re, im)."""
    if volume.is_complex():
        return torch.view_as_real(volume).permute(3, 0, 1, 2).unsqueeze(0), True
    return volume.unsqueeze(0).unsqueeze(0), False


def _sample(volume: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``volume`` ``(D, D, D)`` at voxel positions ``pos`` ``(B, H, W, 3)``.

    ``pos`` is ``(x, y, z)`` in voxel indices (DC at ``D // 2``); returns ``(B, H, W)`` with the
    volume's dtype, zero outside the grid (module docstring, "Interpolation").
    """
    D = volume.shape[-1]
    grid = pos * (2.0 / (D - 1)) - 1.0
    inp, is_complex = _to_channels(volume)
    out = F.grid_sample(
        inp, grid.unsqueeze(0), mode="bilinear", padding_mode="zeros", align_corners=True
    )[0]  # (C, B, H, W)
    if is_complex:
        return torch.view_as_complex(out.permute(1, 2, 3, 0).contiguous())
    return out[0]


def _check_volume(volume: torch.Tensor, rotations: torch.Tensor) -> None:
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"volume must be (D, D, D), got {tuple(volume.shape)}")
    if rotations.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must be (..., 3, 3), got {tuple(rotations.shape)}")


def _real_rotations(volume: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` rotations on the volume's device, in its real dtype."""
    real_dtype = volume.real.dtype if volume.is_complex() else volume.dtype
    return rotations.reshape(-1, 3, 3).to(device=volume.device, dtype=real_dtype)


def extract_central_slices(
    volume: torch.Tensor,
    rotations: torch.Tensor,
    out_box: int | None = None,
    oversampling: float = 1.0,
) -> torch.Tensor:
    """Central slices of a centred 3D grid for a batch of poses (trilinear, zero outside).

    Args:
        volume: ``(D, D, D)`` real (Hartley) or complex (Fourier) grid ``[kz, ky, kx]``, DC at
            ``D // 2``.
        rotations: ``(..., 3, 3)`` RELION A matrices; the slice samples ``volume`` at ``k @ R``.
        out_box: slice side ``L`` (default ``D``); the slice's DC is at ``L // 2``. For an odd
            ``D = L + 1`` grid cropped to an even ``L`` slice pass ``out_box=L``.
        oversampling: scale ``s`` of the sample points (see the module docstring).

    Returns:
        ``(..., L, L)`` slices ``[ky, kx]`` with the volume's dtype (complex in, complex out).
        For the identity rotation and ``s = 1``, ``out_box = D``, the slice is exactly the
        ``kz = 0`` plane ``volume[D // 2]``.

    Raises:
        ValueError: ``volume`` is not a cube or ``rotations`` not ``(..., 3, 3)``.
    """
    _check_volume(volume, rotations)
    D = volume.shape[-1]
    L = D if out_box is None else out_box
    rot = _real_rotations(volume, rotations)
    pos = slice_coordinates(rot, L, oversampling) + D // 2  # voxel indices, (B, L, L, 3)
    return _sample(volume, pos).reshape(*rotations.shape[:-2], L, L)


def extract_points(
    volume: torch.Tensor, rotations: torch.Tensor, freqs: torch.Tensor
) -> torch.Tensor:
    """Sample the central slices at chosen in-plane frequencies only (trilinear, zero outside).

    Equal to :func:`extract_central_slices` read at the pixels of ``freqs``, at the cost of
    those pixels alone (e.g. the frequency mask's disc, a fraction ``pi / 4`` of its box).

    Args:
        volume: ``(D, D, D)`` real or complex grid ``[kz, ky, kx]``, DC at ``D // 2``.
        rotations: ``(..., 3, 3)`` RELION A matrices; samples are at ``k @ R``.
        freqs: ``(P, 2)`` frequencies ``(kx, ky)`` in Fourier pixels relative to DC.

    Returns:
        ``(..., P)`` with the volume's dtype.

    Raises:
        ValueError: ``volume`` is not a cube or ``rotations`` not ``(..., 3, 3)``.
    """
    _check_volume(volume, rotations)
    rot = _real_rotations(volume, rotations)
    pos = point_coordinates(rot, freqs) + volume.shape[-1] // 2  # (B, P, 3)
    return _sample(volume, pos[:, :, None]).reshape(*rotations.shape[:-2], freqs.shape[0])


def insert_central_slices(
    slices: torch.Tensor,
    rotations: torch.Tensor,
    box: int,
    oversampling: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-project slices into a ``(D, D, D)`` grid with trilinear weights: the exact adjoint.

    ``insert`` is the adjoint of :func:`extract_central_slices` (same sample points, same
    trilinear weights, zero outside): ``<extract(V, R), S> == <V, insert(S, R)[0]>`` for the
    real inner product (and the complex one, ``sum(conj(a) b)``).

    Args:
        slices: ``(..., L, L)`` real or complex ``[ky, kx]``, DC at ``L // 2``.
        rotations: ``(..., 3, 3)`` RELION A matrices, same batch shape as ``slices``.
        box: volume side ``D``; DC at ``D // 2``.
        oversampling: as in :func:`extract_central_slices`.

    Returns:
        ``(volume, weights)``: ``volume`` ``(D, D, D)`` with the slices' dtype (sum of
        weight * value), ``weights`` ``(D, D, D)`` real (sum of trilinear weights, i.e. the
        insertion of all-ones slices), for normalising a reconstruction ``volume / weights``.
    """
    L = slices.shape[-1]
    if slices.shape[-2] != L:
        raise ValueError(f"slices must be (..., L, L), got {tuple(slices.shape)}")
    D = box
    real_dtype = slices.real.dtype if slices.is_complex() else slices.dtype
    device = slices.device
    rot = rotations.to(device=device, dtype=real_dtype).reshape(-1, 3, 3)
    vals = slices.reshape(-1, L, L)
    if vals.shape[0] != rot.shape[0]:
        raise ValueError(
            f"slices batch {tuple(slices.shape[:-2])} != rotations batch "
            f"{tuple(rotations.shape[:-2])}"
        )
    pos = slice_coordinates(rot, L, oversampling) + D // 2
    # Same index arithmetic as grid_sample(align_corners=True): normalise, then unnormalise.
    pos = ((pos * (2.0 / (D - 1)) - 1.0) + 1.0) * (0.5 * (D - 1))
    pos = pos.reshape(-1, 3)
    v = vals.reshape(-1)
    base = torch.floor(pos)
    t = pos - base
    base = base.long()
    vol = torch.zeros(D * D * D, dtype=slices.dtype, device=device)
    wsum = torch.zeros(D * D * D, dtype=real_dtype, device=device)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                ix = base[:, 0] + dx
                iy = base[:, 1] + dy
                iz = base[:, 2] + dz
                w = (
                    (t[:, 0] if dx else 1 - t[:, 0])
                    * (t[:, 1] if dy else 1 - t[:, 1])
                    * (t[:, 2] if dz else 1 - t[:, 2])
                )
                ok = (ix >= 0) & (ix < D) & (iy >= 0) & (iy < D) & (iz >= 0) & (iz < D)
                flat = ((iz * D + iy) * D + ix)[ok]
                wk = w[ok]
                vol = vol.index_add(0, flat, v[ok] * wk)
                wsum = wsum.index_add(0, flat, wk)
    return vol.reshape(D, D, D), wsum.reshape(D, D, D)


def phase_ramp(
    shifts_px: torch.Tensor,
    box: int,
) -> torch.Tensor:
    """``exp(-2 pi i (kx sx + ky sy) / L)`` on the centred ``(L, L)`` grid, ``(..., L, L)`` complex.

    Args:
        shifts_px: ``(..., 2)`` shifts ``(sx, sy)`` in **pixels** (real, any float dtype).
        box: image side ``L``; ``kx = j - L // 2``, ``ky = i - L // 2`` for pixel ``[i, j]``.
    """
    f = torch.arange(box, dtype=shifts_px.dtype, device=shifts_px.device) - box // 2
    return _ramp(shifts_px, f[None, :], f[:, None], box)


def phase_ramp_points(shifts_px: torch.Tensor, freqs: torch.Tensor, box: int) -> torch.Tensor:
    """:func:`phase_ramp` at chosen frequencies only: ``(..., P)`` complex.

    Args:
        shifts_px: ``(..., 2)`` shifts ``(sx, sy)`` in pixels.
        freqs: ``(P, 2)`` frequencies ``(kx, ky)`` in Fourier pixels relative to DC.
        box: image side ``L`` (the ramp's period).
    """
    k = freqs.to(dtype=shifts_px.dtype, device=shifts_px.device)
    return _ramp(shifts_px, k[:, 0], k[:, 1], box)


def _ramp(shifts_px: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, box: int) -> torch.Tensor:
    """``exp(-2 pi i (kx sx + ky sy) / L)``, ``kx`` and ``ky`` broadcast to the output's tail."""
    tail = (None,) * kx.ndim
    sx, sy = shifts_px[(..., 0, *tail)], shifts_px[(..., 1, *tail)]
    phase = sx * (kx / box) + sy * (ky / box)
    return torch.polar(torch.ones_like(phase), -2.0 * math.pi * phase)


def phase_shift(images_ft: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Translate images given by their centred Fourier transform: content moves by ``+shift``.

    ``out(k) = F(k) exp(-2 pi i k . t / L)``, so ``ifft2_centered(out)(r) = x(r - t)``: the image
    content moves by ``+t = (sx, sy)`` pixels (``+x`` = increasing column index, ``+y`` =
    increasing row index). An integer shift equals ``torch.roll(x, (sy, sx), dims=(-2, -1))``.
    Shifts in Å (e.g. :class:`~cryospin.core.interfaces.PoseCandidates`) must be divided by the
    pixel size first.

    Args:
        images_ft: complex ``(..., L, L)`` centred transforms ``[ky, kx]`` (DC at ``L // 2``).
        shifts_px: ``(..., 2)`` ``(sx, sy)`` in pixels, broadcast against the leading axes.

    Returns:
        complex ``(..., L, L)``.
    """
    ramp = phase_ramp(shifts_px.to(images_ft.real.dtype), images_ft.shape[-1])
    return images_ft * ramp
