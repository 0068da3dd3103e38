"""Optics groups with different pixel sizes: Fourier rescaling onto one working pixel size.

RELION lets optics groups differ in pixel size and brings every group onto the reference's
pixel size in Fourier space. cryospin does the same when it reads the images: the working pixel
size is the *smallest* pixel size of the file (no group loses resolution), the box stays the
stack's box L, and each image of a coarser group (pixel ``p_g``) is resampled at the working
grid's points ``x_i = c + (i - c) p_w / p_g`` (``c = L // 2``, in the group's pixels) by
band-limited (trigonometric) interpolation: the image's discrete Fourier series evaluated
off-grid, i.e. its spectrum zero-padded out to the working Nyquist frequency. Every group keeps
its own spectrum up to its own Nyquist frequency; the field of view of a coarser group is
cropped to ``L p_w`` Å around the centre. CTF parameters and origins are physical (Å) and need
no change.

Optics groups with different *box* sizes are refused (:func:`cryospin.io.star.read_star`).
"""

from __future__ import annotations

import numpy as np

from cryospin.core.particles import ImageReader

#: Pixel sizes closer than this (relative) are the same pixel size.
SAME_PIXEL_RTOL = 1e-5


def interpolation_matrix(box: int, scale: float) -> np.ndarray:
    """Float64 ``(L, L)`` matrix ``A``: ``A @ f`` resamples a row ``f`` ``(L,)`` by ``scale``.

    ``(A @ f)[i]`` is the band-limited periodic interpolant of ``f`` (its DFT series, the
    Nyquist term of an even L taken as a cosine) at ``c + (i - c) * scale`` with ``c = L // 2``:
    ``A[i, j] = (1/L) sum_k cos(2 pi k (x_i - j) / L)`` over ``k`` in ``fftfreq(L) * L``.
    ``scale = 1`` gives the identity.
    """
    c = box // 2
    x_out = c + (np.arange(box) - c) * float(scale)
    k = np.fft.fftfreq(box) * box
    e_out = np.exp(2j * np.pi * np.outer(x_out, k) / box)
    e_in = np.exp(2j * np.pi * np.outer(np.arange(box), k) / box)
    return (e_out @ e_in.conj().T).real / box


class RescaledReader:
    """An :class:`~cryospin.core.particles.ImageReader` putting every particle at one pixel size.

    ``pixel_sizes`` ``(N,)`` are the particles' pixel sizes in Å (their optics groups'), and
    ``working_A`` the pixel size of the images returned; images whose pixel size equals it
    (within :data:`SAME_PIXEL_RTOL`) pass unchanged, the others are resampled with
    :func:`interpolation_matrix` along y and x. ``read`` returns float32 ``(n, L, L)``.
    """

    def __init__(self, base: ImageReader, box: int, pixel_sizes: np.ndarray, working_A: float):
        self.base = base
        self.box = int(box)
        self.scale = float(working_A) / np.asarray(pixel_sizes, dtype=np.float64)
        self._matrices: dict[float, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.base)

    def _matrix(self, scale: float) -> np.ndarray:
        if scale not in self._matrices:
            self._matrices[scale] = interpolation_matrix(self.box, scale)
        return self._matrices[scale]

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Float32 images ``(n, L, L)`` ``[y, x]`` at the working pixel size."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = self.base.read(idx)
        scales = self.scale[idx]
        for scale in np.unique(scales):
            if abs(scale - 1.0) <= SAME_PIXEL_RTOL:
                continue
            sel = scales == scale
            a = self._matrix(float(scale))
            images[sel] = (a @ images[sel].astype(np.float64) @ a.T).astype(np.float32)
        return images
