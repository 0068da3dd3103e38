"""Non-uniform FFTs behind the simulator's exact projector, by FINUFFT.

The simulator never interpolates a voxel grid. An image's spectrum is the continuous Fourier
transform of the atoms (or voxels) evaluated at the image's DFT frequencies, computed by a
*type-1* non-uniform FFT (points -> uniform frequencies)::

    c_j = sum_a w_a exp(-2 pi i j . u_a / n)        j = -n/2 .. n/2 - 1 on every axis

and, for map input, a *type-2* one (uniform grid -> arbitrary frequencies). Both are FINUFFT's
(Barnett, Magland & af Klinteberg, SIAM J. Sci. Comput. 41, C479 (2019); the ``finufft`` package),
whose "exponential of semicircle" kernel reaches the requested relative tolerance ``eps``
(relative to the sum of ``|w_a|``) at a cost that grows only with ``log(1 / eps)``.
FINUFFT runs single-threaded here (``nthreads=1``): the simulator parallelises over worker
processes, and one thread keeps every result bit-for-bit reproducible.

Coordinates ``u`` are in units of the output grid spacing (pixels), in array-axis order
(``(y, x)`` or ``(z, y, x)``), periodic with period ``n``; FINUFFT takes them as the phases
``2 pi u / n``.
"""

from __future__ import annotations

import finufft
import numpy as np

#: Default relative tolerance of every transform: below the float32 rounding of a written stack.
EPS = 1e-8

_TYPE1 = {2: finufft.nufft2d1, 3: finufft.nufft3d1}


def rfft_modes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer mode numbers of an ``n``-point rfft layout: (full axis in fft order, half axis)."""
    return np.fft.fftfreq(n, 1.0 / n).round().astype(np.int64), np.arange(n // 2 + 1)


def type1_rfft(
    coords: np.ndarray,
    weights: np.ndarray,
    species: np.ndarray,
    n_species: int,
    n: int,
    eps: float = EPS,
) -> np.ndarray:
    """Type-1 NUFFT of real point weights, per species, in rfft layout.

    Args:
        coords: ``(n_points, d)`` positions in output-pixel units, array-axis order, ``d`` 2 or 3.
        weights: ``(n_points,)`` real weights.
        species: ``(n_points,)`` int in ``[0, n_species)``: points of each species are summed apart.
        n_species: number of species.
        n: modes per axis (even); the output covers ``j = -n/2 .. n/2 - 1``.
        eps: relative tolerance.

    Returns:
        complex128 ``(n_species, n, ..., n // 2 + 1)``: ``c_j = sum_a w_a exp(-2 pi i j.u_a / n)``,
        leading axes in fft order (``np.fft.fftfreq``), last axis ``j = 0 .. n/2``.

    Raises:
        ValueError: ``coords`` is not ``(n_points, 2)`` or ``(n_points, 3)``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    d = coords.shape[1] if coords.ndim == 2 else 0
    if d not in _TYPE1:
        raise ValueError(f"coords must be (n_points, 2) or (n_points, 3), got {coords.shape}")
    # FINUFFT's centred modes: n (even) gives -n/2 .. n/2 - 1, n + 1 (odd) gives -n/2 .. n/2,
    # so the last axis holds j = n/2 as the rfft layout does.
    modes = (n,) * (d - 1) + (n + 1,)
    phases = 2.0 * np.pi * coords / n
    out = np.zeros((n_species,) + (n,) * (d - 1) + (n // 2 + 1,), dtype=np.complex128)
    for s in range(n_species):
        sel = species == s
        if not sel.any():
            continue
        strengths = np.asarray(weights, dtype=np.float64)[sel].astype(np.complex128)
        axes = [np.ascontiguousarray(phases[sel, a]) for a in range(d)]
        c = _TYPE1[d](*axes, strengths, modes, eps=eps, isign=-1, nthreads=1)
        c = np.fft.ifftshift(c, axes=tuple(range(d - 1)))  # leading axes: centred -> fft order
        out[s] = c[..., n // 2 :]
    return out


class Type2:
    """Type-2 NUFFT of one real ``(n, n, n)`` grid: its Fourier sum at arbitrary frequencies.

    Voxel ``i`` (array order ``[z, y, x]``) sits at position ``u = i - n // 2``; :meth:`__call__`
    returns ``sum_u v_u exp(-2 pi i q . u / n)``. The FINUFFT plan is made once and reused.

    Args:
        values: ``(n, n, n)`` real grid.
        eps: relative tolerance.

    Raises:
        ValueError: ``values`` is not a cube.
    """

    def __init__(self, values: np.ndarray, eps: float = EPS) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 3 or len(set(values.shape)) != 1:
            raise ValueError(f"type-2 NUFFT needs an (n, n, n) grid, got {values.shape}")
        self.n = values.shape[0]
        # FINUFFT's centred modes -n/2 .. (n - 1)/2 are exactly u = i - n // 2 (even or odd n).
        self._values = values.astype(np.complex128)
        self._plan = finufft.Plan(2, values.shape, eps=eps, isign=-1, nthreads=1)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """Evaluate at ``q`` ``(p, 3)``: frequencies in modes (cycles per ``n``), array order."""
        phases = 2.0 * np.pi * np.asarray(q, dtype=np.float64) / self.n
        self._plan.setpts(*(np.ascontiguousarray(phases[:, a]) for a in range(3)))
        return self._plan.execute(self._values)
