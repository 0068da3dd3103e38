"""The training schedule in work done, not epochs: stage lengths and the coarse-to-fine mask.

Why (issue 12, README "Benchmarks"): a schedule in epochs gives a 5,000-particle stack a tenth of
the optimisation steps that the paper's 50,000 particles got in the same 7 epochs, and the encoder
had not converged at the switch. The amortized stage learns one function of the image (the
encoder) and the volume, so its length is a number of images seen, whatever N:
``amortized_images = 200,000`` is 6,250 steps of 32 images, close to the paper's 7 x 50,000 / 64
= 5,500 steps. The direct stage refines each particle's own pose, so it needs visits per particle:
``max(direct_min_epochs, ceil(direct_images / N))`` epochs.

Coarse-to-fine (frequency marching, as cryoSPARC's ab initio and RELION's initial model do): the
amortized stage of a semi-amortized run sees only the lowest ``amortized_box / 2`` Fourier shells
(:func:`amortized_crop`; slices are computed on that crop only, and the encoder sees the images
Fourier-cropped to it), all of them from its first step. The direct stage then works on the full
box and its mask grows to ``mask_radius`` over its first two thirds. Shells count features across
the molecule, since a molecule fills about the same fraction of the box whatever its size, so the
rule does not depend on the molecule: at box 64 the amortized stage sees what a box-32 run sees.

Why the coarse band is whole from the start (README "Benchmarks"): with a mask growing from
``amortized_box / 4`` shells the 80S ribosome (7.06 Å/px, so the CTF is still rising over the
lowest shells; a near-spherical shape at low resolution) never left a spherical map (100 Å vs
truth at the switch, 93° errors at the end), although its lowest 8 shells identify the poses
given the right map (``bench/pose_identifiability.py``); with the 16 shells from the first step
it reached 42 Å at the switch and passed. The same molecule with six times the defocus, and
HSP90 with the ribosome's low-frequency CTF, passed with the growing mask too: it is the
combination of little low-frequency signal and a round molecule that the wider start fixes.
"""

from __future__ import annotations

import math

from cryospin.core.engine.config import RunConfig


def amortized_crop(cfg: RunConfig, box: int) -> int | None:
    """Return the box ``c < L`` the amortized stage works at, or ``None`` for the full box ``L``.

    Only a semi-amortized run crops: a fully amortized run must reach the full resolution with
    its encoder's poses.
    """
    c = cfg.amortized_box
    if cfg.stage_schedule != "semi-amortized" or c is None or c >= box:
        return None
    return c - c % 2


def _increasing(knots: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop knots whose epoch does not increase (a zero-length stage)."""
    out: list[tuple[float, float]] = []
    for x, y in knots:
        if not out or x > out[-1][0]:
            out.append((x, y))
    return out


def _mask_knots(cfg: RunConfig, box: int, switch: int, epochs: int) -> list[tuple[float, float]]:
    """``(epoch, radius)`` knots of the coarse-to-fine mask (fractions of Nyquist).

    The coarse band (``r * amortized_box / L``) is held through the amortized stage of a
    semi-amortized run, then grows to ``r`` over the first two thirds of the rest.
    """
    r = cfg.mask_radius
    f = min(cfg.amortized_box or box, box) / box  # the coarse box as a fraction of L
    hold = switch if cfg.stage_schedule == "semi-amortized" else 0
    grow = hold + max(1, math.ceil(2 * (epochs - hold) / 3))
    return _increasing([(0.0, r * f), (float(hold), r * f), (float(grow), r)])


def resolve_schedule(cfg: RunConfig, n: int, box: int) -> RunConfig:
    """Return ``cfg`` with concrete ``epochs``, ``switch_epoch`` and ``mask_knots`` for ``n``.

    Fields the user set (``epochs``, ``switch_epoch``, ``mask_radius_start``/``mask_knots``)
    are kept; ``None`` ones come from the work schedule (module docstring):

    * amortized epochs ``A = ceil(amortized_images / n)``;
    * direct epochs ``D = max(direct_min_epochs, ceil(direct_images / n))``;
    * semi-amortized: ``switch_epoch = A``, ``epochs = switch_epoch + D``; amortized only:
      ``epochs = ceil((amortized_images + direct_images) / n)``; direct only: ``epochs = D``.

    Args:
        cfg: the validated run configuration.
        n: particles one epoch visits (all processes together).
        box: the working box ``L`` in pixels.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"resolve_schedule: need at least one particle, got {n}")
    amortized = math.ceil(cfg.amortized_images / n)
    direct = max(cfg.direct_min_epochs, math.ceil(cfg.direct_images / n))
    switch = cfg.switch_epoch
    if cfg.stage_schedule == "semi-amortized":
        switch = amortized if switch is None else switch
        epochs = cfg.epochs if cfg.epochs is not None else switch + direct
    elif cfg.stage_schedule == "amortized":
        switch = 0 if switch is None else switch
        total = cfg.amortized_images + cfg.direct_images
        epochs = cfg.epochs if cfg.epochs is not None else math.ceil(total / n)
    else:
        switch = 0 if switch is None else switch
        epochs = cfg.epochs if cfg.epochs is not None else direct
    update: dict[str, object] = {"epochs": epochs, "switch_epoch": switch}
    if cfg.coarse_to_fine and cfg.mask_radius_start is None and cfg.mask_knots is None:
        update["mask_knots"] = _mask_knots(cfg, box, min(switch, epochs), epochs)
    return cfg.model_copy(update=update)
