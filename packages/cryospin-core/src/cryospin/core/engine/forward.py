"""Forward model and objective (paper Eq. 2, 3 and 6).

``pred = S_t (CTF * decoder(R))``: the decoder's centred Fourier slice for rotation ``R``,
multiplied by the particle's CTF, translated by ``t`` (pixels, a phase ramp). It is compared with
the centred transform of the preprocessed image inside a circular frequency mask.

Losses per candidate, shape ``(B, M)``:

* ``gaussian``: ``mean_mask |pred - obs|^2`` - the Gaussian negative log-likelihood of Eq. 3 with a
  constant noise variance, up to an additive constant and a positive scale (which Adam ignores);
* ``l1``: ``mean_mask (|Re d| + |Im d|)``, the masked L1 of the complex difference used by the
  paper's code (docs/CONVENTIONS.md, last section).

Winner-takes-all (Eq. 6): each image's loss is the minimum over its candidates; the batch loss is
the mean of these minima, and the argmin is the winning head.
"""

from __future__ import annotations

from typing import Any

import torch

from cryospin.core.fourier import radius_grid
from cryospin.core.slicing import mask_frequencies, phase_ramp, phase_ramp_points


def frequency_mask(
    box: int, radius_frac: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Boolean ``(L, L)`` disc of radius ``radius_frac * L / 2`` Fourier pixels about DC."""
    return (radius_grid(box, 2) <= radius_frac * box / 2).to(device)


def render(
    decoder: torch.nn.Module,
    rotations: torch.Tensor,
    ctf: torch.Tensor,
    shifts_px: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predicted image transforms ``(B, M, c, c)`` for rotations ``(B, M, 3, 3)``.

    ``ctf`` is ``(B, c, c)``: the full box (``c = decoder.box``) or its central crop (``c``
    even, smaller: the lowest ``c / 2`` shells, coarse-to-fine), in which case only the crop of
    each slice is computed when the decoder ``supports_crop``
    (:meth:`cryospin.core.interfaces.Decoder.slices`). ``shifts_px``
    ``(B, M, 2)`` or ``(B, 1, 2)`` (pixels of the full box) or ``None``; the phase ramp of the
    crop is the crop of the full box's ramp.

    With a boolean ``(c, c)`` ``mask`` only its ``P`` pixels are predicted, ``(B, M, P)`` in
    row-major order: ``render(...)[..., mask]``, computed on those pixels alone when the decoder
    ``supports_points`` (:meth:`cryospin.core.interfaces.Decoder.masked_slices`).
    """
    b, m = rotations.shape[:2]
    inner: Any = getattr(decoder, "module", decoder)  # a DistributedDataParallel wrapper's
    c, full = ctf.shape[-1], int(inner.box)
    rot = rotations.reshape(b * m, 3, 3)
    if mask is not None and inner.supports_points:  # through the wrapper (DDP, see below)
        flat = decoder(rot, mask=mask)
    elif c == full:
        flat = decoder(rot)
    elif inner.supports_crop:  # through the wrapper: DDP syncs gradients only on its forward
        flat = decoder(rot, size=c)
    else:
        lo = full // 2 - c // 2
        flat = decoder(rot)[..., lo : lo + c, lo : lo + c]
    if mask is not None and not inner.supports_points:
        flat = pixels(flat, mask)
    tail = (c, c) if mask is None else (flat.shape[-1],)
    pred = flat.reshape(b, m, *tail) * pixels(ctf, mask)[:, None].to(flat.real.dtype)
    if shifts_px is not None:
        shifts = shifts_px.to(flat.real.dtype) * (c / full)
        if mask is None:
            pred = pred * phase_ramp(shifts, c)
        else:
            pred = pred * phase_ramp_points(shifts, mask_frequencies(mask), c)
    return pred


def pixels(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Return ``x[..., mask]``, the pixels ``(..., P)`` of ``x`` ``(..., c, c)`` in a mask.

    ``mask`` is boolean ``(c, c)``; pixels come in row-major order (read by ``index_select``,
    faster than boolean indexing). Without a mask, ``x`` itself.
    """
    if mask is None:
        return x
    return x.flatten(-2).index_select(-1, mask.flatten().nonzero().squeeze(1))


def candidate_loss(
    pred: torch.Tensor,
    obs: torch.Tensor,
    mask: torch.Tensor | None,
    kind: str = "gaussian",
) -> torch.Tensor:
    """Loss per candidate ``(B, M)`` between ``pred (B, M, L, L)`` and ``obs (B, L, L)``.

    With ``mask=None`` both are already read at the mask's pixels: ``pred (B, M, P)`` and
    ``obs (B, P)`` (:func:`render` with a mask).
    """
    diff = pred - obs[:, None]
    if mask is not None:
        diff = diff[..., mask]
    if kind == "l1":
        per = diff.real.abs() + diff.imag.abs()
    else:
        per = diff.real.square() + diff.imag.square()
    return per.mean(-1)


def winner_takes_all(losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean over the batch of the per-image minimum, winning index per image)``."""
    best, idx = losses.min(dim=1)
    return best.mean(), idx
