"""Contrast conventions of the particle formats: the inversion default and a check of it.

Whether a stack needs its contrast inverted for the core's forward model depends on how the stack
was written, not on the format alone: :func:`default_invert` gives each format's habit
(:data:`INVERT_DEFAULT`, cryoSPARC's ``blob/sign``), :func:`measure_contrast` measures a sample of
the images, and :func:`contrast_mismatch` reports an obvious disagreement between the two.
The image preprocessing itself (Fourier crop, inversion, noise normalisation) is the engine's,
:class:`cryospin.core.engine.data.ParticleData`.
"""

from __future__ import annotations

import numpy as np

from cryospin.core.particles import ParticleStack

#: Default of the contrast-inversion flag per format (see :func:`default_invert`).
INVERT_DEFAULT = {"relion-star": True, "cryosparc-cs": False, "mrc-stack": False}


def default_invert(stack: ParticleStack) -> bool:
    """Default of the ``--invert`` flag for ``stack``, for the core's forward model.

    The forward model is ``image = CTF * projection`` with :mod:`cryospin.core.ctf` (cryoDRGN's
    sign, ``CTF(0) = -w``) and a protein-positive volume, so it predicts protein-*dark* images,
    as in raw micrographs. Established on real data (tests/io/test_trpv1_end_to_end.py): the
    raw TRPV1 RELION images correlate *negatively* with ``CTF * projection`` (-0.18 to -0.26),
    positively once inverted.

    * **RELION** (``.star``): ``True``. RELION's extraction inverts contrast by default, so its
      stacks are protein-bright (RELION's own CTF has the opposite sign). cryoDRGN inverts by
      default for the same reason.
    * **cryoSPARC** (``.cs``): from ``blob/sign``; cryoSPARC multiplies images by it to make
      protein bright, so ``-1`` marks protein-dark stacks (no inversion) and ``+1``
      protein-bright ones (inversion). Without ``blob/sign``: ``False``.
    * **bare MRC stacks**: ``False`` (no metadata; the raw-micrograph convention, which is also
      the simulator's).

    A stack can break its format's habit (e.g. EMPIAR-10076's RELION 3.0 STAR names a
    protein-dark stack): :func:`contrast_mismatch` detects an obvious disagreement.
    """
    fmt = stack.extra.get("format", "mrc-stack")
    if fmt == "cryosparc-cs" and stack.extra.get("blob_sign") is not None:
        return float(stack.extra["blob_sign"]) > 0
    return INVERT_DEFAULT.get(fmt, False)


def measure_contrast(stack: ParticleStack, n: int = 64, seed: int = 0) -> tuple[float, float]:
    """Measure whether particles are brighter or darker than their background.

    For up to ``n`` random images: the mean inside radius ``0.4 L / 2`` minus the mean outside
    ``0.8 L / 2``, in units of the outside standard deviation. Returns ``(mean, t)``: the mean
    of that statistic over the images and its t-value (mean / standard error). Positive means
    protein-bright. Weak for filaments or particles that do not fill the centre.
    """
    box = stack.require_box()
    count = len(stack)
    pick = np.sort(np.random.default_rng(seed).choice(count, min(n, count), replace=False))
    images = stack.images.read(pick).astype(np.float64)
    inner = circular_mask(box, 0.4)
    outer = ~circular_mask(box, 0.8)
    bg_std = images[:, outer].std(axis=1)
    bg_std[bg_std == 0] = 1.0
    stat = (images[:, inner].mean(axis=1) - images[:, outer].mean(axis=1)) / bg_std
    if len(stat) < 2:
        return float(stat.mean()), 0.0
    sem = stat.std(ddof=1) / np.sqrt(len(stat))
    return float(stat.mean()), float(stat.mean() / sem) if sem > 0 else 0.0


def contrast_mismatch(stack: ParticleStack, invert: bool, t_threshold: float = 5.0) -> str | None:
    """Return a warning when ``invert`` contradicts the measured contrast, else ``None``.

    After the flag, images must be protein-dark for the forward model; a measured contrast with
    ``|t| > t_threshold`` (at least 5 images) of the other sign is an obvious mismatch.
    """
    if len(stack) < 5:
        return None
    mean, t = measure_contrast(stack)
    if abs(t) <= t_threshold:
        return None
    bright = mean > 0
    if bright != invert:
        state = "bright" if bright else "dark"
        return (
            f"{stack.path}: particles look protein-{state} (centre vs background "
            f"{mean:+.3f} sd, t = {t:+.1f}) but contrast inversion is {'on' if invert else 'off'}; "
            f"the forward model expects protein-dark images: use invert={not invert}"
        )
    return None


def circular_mask(box: int, radius: float) -> np.ndarray:
    """Boolean ``(L, L)`` mask, true inside radius ``radius * L / 2`` around ``(L//2, L//2)``."""
    c = box // 2
    y, x = np.mgrid[:box, :box]
    return np.hypot(x - c, y - c) < radius * box / 2
