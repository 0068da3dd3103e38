"""Frequency-grid helpers shared by the decoders.

Conventions (see :mod:`cryospin.core.interfaces`): a box ``L`` (even), centred Fourier arrays with
DC at index ``L // 2``. The decoders work internally on the odd grid of ``L + 1`` samples per axis,
frequency index ``k = i - L // 2`` for ``i = 0 .. L``, i.e. ``k`` in ``[-L/2, L/2]``: on an odd grid
the point reflection ``k -> -k`` is the index reversal ``i -> L - i`` (``torch.flip``), so
``H(-k)`` is available without any roll (docs/CONVENTIONS.md item 2). Cropping the last
row/column of every axis (``[:L]``) gives back the ``L`` grid with DC at ``L // 2``.

The Hartley convention is that of :mod:`cryospin.core.fourier`: ``H(k) = Re F(k) - Im F(k)``
(paper Eq. 7, cryoDRGN), inverted for the transform of a real map by
:func:`cryospin.core.fourier.fourier_from_hartley`,
``F(k) = ((H(k) + H(-k)) - i (H(k) - H(-k))) / 2``, which on the odd grid is a plain flip.
"""

from __future__ import annotations

import torch


def odd_size(box: int) -> int:
    """Return the samples per axis of the odd grid for box ``box``: ``box + 1`` (``box`` even)."""
    return box + 1


def centred_freqs(
    n: int,
    centre: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integer frequency indices ``arange(n) - centre`` as a float tensor."""
    return torch.arange(n, dtype=dtype, device=device) - centre


def radius_grid(
    n: int,
    centre: int,
    ndim: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``|k|`` in frequency-index units on an ``n**ndim`` grid with DC at ``centre``."""
    k = centred_freqs(n, centre, dtype=dtype, device=device)
    r2 = torch.zeros((n,) * ndim, dtype=dtype, device=device)
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = n
        r2 = r2 + k.reshape(shape) ** 2
    return r2.sqrt()


def radius_mask(
    box: int,
    radius: float | None,
    ndim: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Mask ``|k| <= radius * (box / 2)`` on the centred ``box**ndim`` grid, or ``None``.

    ``radius`` is in units of Nyquist (1.0: the sphere inscribed in the box); ``None`` means no
    mask.
    """
    if radius is None:
        return None
    r = radius_grid(box, box // 2, ndim, dtype=torch.float64, device=device)
    return (r <= radius * (box / 2) + 1e-9).to(dtype)


def pad_high_wrap(f: torch.Tensor, ndim: int) -> torch.Tensor:
    """Pad each of the last ``ndim`` axes of a centred even grid by one sample at the high end.

    The new sample at frequency ``+L/2`` is a copy of the one at ``-L/2`` (index 0): the DFT is
    periodic, so this is the same coefficient, and the padded ``(L+1)`` grid of the transform of a
    real map is exactly Hermitian about ``L // 2``. (Zero padding would break the index-reversal
    identity at ``-L/2``.)
    """
    for axis in range(f.ndim - ndim, f.ndim):
        first = f.narrow(axis, 0, 1)
        f = torch.cat([f, first], dim=axis)
    return f
