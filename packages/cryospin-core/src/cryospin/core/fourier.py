"""Centred Fourier and Hartley transforms, Fourier cropping, frequency grids and radial shells.

Conventions (every function here follows them; see also :mod:`cryospin.core.interfaces`):

* **Layout.** Real-space arrays are indexed ``[..., y, x]`` (2D) or ``[..., z, y, x]`` (3D, MRC
  order); the last axis is x. Transforms act on the last ``ndim`` axes, so any number of leading
  batch axes is allowed.
* **Centring.** The real-space origin and the Fourier DC component both sit at index ``L // 2`` of
  every transformed axis, for even and odd ``L`` alike (RELION's image centre ``(int)(L/2)``). The
  centred transform is ``fftshift(fft(ifftshift(x)))``: ``ifftshift`` *before* and ``fftshift``
  *after* (they differ for odd ``L``; docs/CONVENTIONS.md item 3, teamtomo torch-fourier-slice
  PR 109).
  Index ``i`` of a centred Fourier axis holds the frequency ``(i - L // 2) / L`` cycles per pixel,
  i.e. ``(i - L // 2) / (L * apix)`` in 1/Å.
* **Normalisation.** Forward transforms are unnormalised (``F(0) = sum(x)``), inverse transforms
  carry ``1 / N`` (``N`` = number of transformed samples): torch/numpy's default ``"backward"``.
* **Hartley.** ``H(k) = Re F(k) - Im F(k)`` (cryoDRGN ``cryodrgn/fft.py``; docs/CONVENTIONS.md
  item 1), real-valued for real input, same centred layout as ``F``. It is its own inverse up to
  ``1 / N``. For real ``x``, ``F(k) = (H(k) + H(-k)) / 2 + i (H(-k) - H(k)) / 2``; ``H(-k)`` is
  the index reversal about DC (:func:`reverse_about_dc`).
* **dtypes/devices.** float32/float64 (complex64/complex128) on any device; every function is pure
  and differentiable with autograd.

Sources: numpy/torch ``fft`` documentation (shift semantics); cryoDRGN ``fft.py`` (Hartley sign,
``symmetrize_ht`` odd padding); RELION image-centre convention.
"""

from __future__ import annotations

import torch

__all__ = [
    "fftn_centered",
    "ifftn_centered",
    "fft2_centered",
    "ifft2_centered",
    "fft3_centered",
    "ifft3_centered",
    "ht2_centered",
    "iht2_centered",
    "ht3_centered",
    "iht3_centered",
    "hartley_from_fourier",
    "fourier_from_hartley",
    "reverse_about_dc",
    "fourier_crop",
    "fourier_downsample",
    "freq_1d",
    "freq_grid",
    "freq_grid_2d",
    "freq_grid_3d",
    "radius_grid",
    "shell_index",
    "radial_average",
]


def _dims(ndim: int) -> tuple[int, ...]:
    if ndim < 1:
        raise ValueError(f"ndim must be >= 1, got {ndim}")
    return tuple(range(-ndim, 0))


# ----------------------------------------------------------------------------------- transforms
def fftn_centered(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Centred FFT over the last ``ndim`` axes: ``fftshift(fftn(ifftshift(x)))``.

    Args:
        x: real or complex ``(..., L1, ..., Lndim)``; the real-space origin at index ``Li // 2``.
        ndim: number of trailing axes transformed (2 for images, 3 for volumes).

    Returns:
        complex ``(..., L1, ..., Lndim)``, DC at index ``Li // 2`` of each axis, unnormalised
        (``F[DC] = x.sum()``).
    """
    d = _dims(ndim)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=d), dim=d), dim=d)


def ifftn_centered(f: torch.Tensor, ndim: int) -> torch.Tensor:
    """Inverse of :func:`fftn_centered`: ``fftshift(ifftn(ifftshift(f)))`` (complex output).

    Takes ``1 / N`` normalisation, so ``ifftn_centered(fftn_centered(x, n), n) == x``. Take
    ``.real`` for a real map.
    """
    d = _dims(ndim)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(f, dim=d), dim=d), dim=d)


def fft2_centered(x: torch.Tensor) -> torch.Tensor:
    """Centred 2D FFT of images ``(..., L, L)`` ``[y, x]`` -> complex ``[ky, kx]``, DC ``L//2``."""
    return fftn_centered(x, 2)


def ifft2_centered(f: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_centered` (complex ``(..., L, L)``; take ``.real`` for images)."""
    return ifftn_centered(f, 2)


def fft3_centered(x: torch.Tensor) -> torch.Tensor:
    """Centred 3D FFT of volumes ``(..., D, D, D)`` ``[z, y, x]`` -> complex ``[kz, ky, kx]``.

    DC at ``D // 2`` on each axis; unnormalised forward transform.
    """
    return fftn_centered(x, 3)


def ifft3_centered(f: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft3_centered` (complex ``(..., D, D, D)``; take ``.real`` for a map)."""
    return ifftn_centered(f, 3)


def hartley_from_fourier(f: torch.Tensor) -> torch.Tensor:
    """Hartley coefficients ``H = Re F - Im F`` of a (centred) Fourier array, same shape, real."""
    if not f.is_complex():
        raise TypeError("hartley_from_fourier expects a complex tensor")
    return f.real - f.imag


def reverse_about_dc(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """``x(-k)``: reverse each of the last ``ndim`` axes about its DC index ``L // 2``.

    Index ``i`` maps to ``2 (L // 2) - i``. On odd axes this is ``flip`` and exact. On even axes
    ``2 (L // 2) - 0 = L`` is off the grid; it is wrapped periodically to index 0 (``flip`` then
    ``roll`` by one), which is exact for a DFT (frequency ``-L/2`` equals ``+L/2`` mod ``L``) but is
    *not* a true mirror for an arbitrary (e.g. learned) grid: there the ``-L/2`` plane has no
    partner, which is why explicit volumes use odd grids (docs/CONVENTIONS.md item 2).
    """
    d = _dims(ndim)
    out = torch.flip(x, dims=d)
    shifts = tuple(1 if x.shape[i] % 2 == 0 else 0 for i in d)
    if any(shifts):
        out = torch.roll(out, shifts=shifts, dims=d)
    return out


def fourier_from_hartley(h: torch.Tensor, ndim: int) -> torch.Tensor:
    """Complex centred ``F`` from centred Hartley ``H`` of a *real* signal (last ``ndim`` axes).

    ``F(k) = (H(k) + H(-k)) / 2 + i (H(-k) - H(k)) / 2`` with ``H(-k)`` from
    :func:`reverse_about_dc`. Exact on odd grids; on even grids exact for the DFT of real data
    (periodic wrap of the ``-L/2`` plane), see :func:`reverse_about_dc`.
    """
    hr = reverse_about_dc(h, ndim)
    return torch.complex(0.5 * (h + hr), 0.5 * (hr - h))


def ht2_centered(x: torch.Tensor) -> torch.Tensor:
    """Centred 2D Hartley transform ``Re F - Im F`` of real images ``(..., L, L)``, DC ``L//2``."""
    return hartley_from_fourier(fft2_centered(x))


def iht2_centered(h: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`ht2_centered`: ``ht2_centered(h) / L^2`` (Hartley is self-inverse)."""
    n = h.shape[-1] * h.shape[-2]
    return ht2_centered(h) / n


def ht3_centered(x: torch.Tensor) -> torch.Tensor:
    """Centred 3D Hartley transform ``Re F - Im F`` of real volumes ``(..., D, D, D)``."""
    return hartley_from_fourier(fft3_centered(x))


def iht3_centered(h: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`ht3_centered`: ``ht3_centered(h) / D^3``."""
    n = h.shape[-1] * h.shape[-2] * h.shape[-3]
    return ht3_centered(h) / n


# ----------------------------------------------------------------------------------- cropping
def fourier_crop(x: torch.Tensor, new_box: int, ndim: int = 2) -> torch.Tensor:
    """Downsample real images/volumes by cropping their centred spectrum (band-limited resampling).

    Args:
        x: real ``(..., L, L)`` (``ndim=2``) or ``(..., L, L, L)`` (``ndim=3``), cubic/square.
        new_box: output side ``l <= L`` (any parity).
        ndim: number of trailing axes to resample.

    Returns:
        real ``(..., l, ..., l)`` with pixel size ``apix * L / l``.

    The central ``l``-box of the centred spectrum (DC at ``L // 2`` -> ``l // 2``) is kept and
    inverse transformed. **Scaling:** the result is multiplied by ``(l / L)^ndim`` so that the
    *mean pixel value is preserved* (a constant image stays the same constant; pixel values are
    those of the band-limited interpolant sampled on the coarser grid), not the sum. For even
    ``l`` the kept ``-l/2`` row has no Hermitian partner; taking the real part of the inverse
    symmetrises it (the usual convention, e.g. cryoDRGN ``downsample``).
    """
    L = x.shape[-1]
    if any(s != L for s in x.shape[-ndim:]):
        raise ValueError(f"fourier_crop needs equal trailing sides, got {tuple(x.shape[-ndim:])}")
    if not 1 <= new_box <= L:
        raise ValueError(f"new_box must be in [1, {L}], got {new_box}")
    if new_box == L:
        return x.clone()
    f = fftn_centered(x, ndim)
    start = L // 2 - new_box // 2
    sl = (Ellipsis,) + (slice(start, start + new_box),) * ndim
    out = ifftn_centered(f[sl], ndim).real
    return out * (new_box / L) ** ndim


def fourier_downsample(images: torch.Tensor, new_box: int) -> torch.Tensor:
    """2D :func:`fourier_crop` of real images ``(..., L, L)`` to ``(..., l, l)``, mean preserved."""
    return fourier_crop(images, new_box, 2)


# ----------------------------------------------------------------------------------- grids
def freq_1d(
    box: int,
    pixel_size_A: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(L,)`` frequencies of a centred axis: ``(arange(L) - L // 2) / (L * apix)``.

    In 1/Å for ``pixel_size_A`` in Å; with the default ``1.0`` in cycles per pixel. Not
    ``linspace(-0.5, 0.5, L)`` (docs/CONVENTIONS.md item 5).
    """
    i = torch.arange(box, dtype=torch.float64, device=device) - box // 2
    return (i / (box * pixel_size_A)).to(dtype)


def freq_grid(
    box: int,
    pixel_size_A: float = 1.0,
    ndim: int = 2,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frequency vectors of the centred grid, ``(L, L, 2)`` or ``(L, L, L, 3)``.

    Array index order is ``[ky, kx]`` / ``[kz, ky, kx]`` (like the data), but the last axis holds
    the vector in ``(kx, ky)`` / ``(kx, ky, kz)`` order (x first). Units 1/Å (cycles/pixel for
    ``pixel_size_A = 1``). DC, the zero vector, is at index ``L // 2`` of every axis.
    """
    f = freq_1d(box, pixel_size_A, dtype=torch.float64, device=device)
    if ndim == 2:
        ky, kx = torch.meshgrid(f, f, indexing="ij")
        return torch.stack([kx, ky], -1).to(dtype)
    if ndim == 3:
        kz, ky, kx = torch.meshgrid(f, f, f, indexing="ij")
        return torch.stack([kx, ky, kz], -1).to(dtype)
    raise ValueError(f"ndim must be 2 or 3, got {ndim}")


def freq_grid_2d(
    box: int,
    pixel_size_A: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(L, L, 2)`` frequencies ``(kx, ky)`` in 1/Å: :func:`freq_grid` with ``ndim=2``."""
    return freq_grid(box, pixel_size_A, 2, dtype=dtype, device=device)


def freq_grid_3d(
    box: int,
    pixel_size_A: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(L, L, L, 3)`` frequencies ``(kx, ky, kz)`` in 1/Å: :func:`freq_grid` with ``ndim=3``."""
    return freq_grid(box, pixel_size_A, 3, dtype=dtype, device=device)


def radius_grid(
    box: int,
    ndim: int = 2,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(L,)*ndim`` distance of each sample from DC ``(L//2, ...)`` in Fourier pixels (indices)."""
    k = freq_grid(box, 1.0 / box, ndim, dtype=torch.float64, device=device)
    return k.norm(dim=-1).to(dtype)


def shell_index(
    box: int, ndim: int = 2, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(L,)*ndim`` int64 radial shell of each sample: ``round(|k|)`` in Fourier pixels.

    Shell ``s`` holds frequencies ``|k|`` in ``[s - 0.5, s + 0.5)`` pixels, i.e. spatial frequency
    ``s / (L * apix)``; shell 0 is DC, shell ``L // 2`` reaches Nyquist (corners go beyond).
    """
    return torch.round(radius_grid(box, ndim, dtype=torch.float64, device=device)).long()


def radial_average(x: torch.Tensor, ndim: int = 2, n_shells: int | None = None) -> torch.Tensor:
    """Average of ``x`` over each radial shell (:func:`shell_index`) of the last ``ndim`` axes.

    Args:
        x: real ``(..., L, L)`` or ``(..., L, L, L)`` centred Fourier-space data (e.g. power).
        ndim: number of trailing (Fourier) axes, 2 or 3.
        n_shells: number of shells returned (default ``L // 2 + 1``, DC up to Nyquist; samples in
            shells beyond are ignored).

    Returns:
        ``(..., n_shells)`` shell means (shells without samples give 0). Differentiable.
    """
    L = x.shape[-1]
    n = L // 2 + 1 if n_shells is None else n_shells
    idx = shell_index(L, ndim, device=x.device).reshape(-1)
    keep = idx < n
    idx = idx[keep]
    flat = x.reshape(*x.shape[:-ndim], -1)[..., keep]
    total = torch.zeros(*flat.shape[:-1], n, dtype=x.dtype, device=x.device)
    total = total.index_add(-1, idx, flat)
    count = torch.bincount(idx, minlength=n).to(x.dtype)
    return total / count.clamp_min(1)
