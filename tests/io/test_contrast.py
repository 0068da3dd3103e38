"""Contrast conventions: each format's inversion default and the measured-contrast check.

The preprocessing itself (Fourier crop, inversion, noise normalisation, half sets) is the
engine's: tests/core/test_engine_data.py.
"""

from __future__ import annotations

import numpy as np

from cryospin.io.contrast import (
    circular_mask,
    contrast_mismatch,
    default_invert,
    measure_contrast,
)


def test_circular_mask_radius_and_centre():
    mask = circular_mask(16, 0.5)  # radius 4 px around (8, 8)
    y, x = np.mgrid[:16, :16]
    np.testing.assert_array_equal(mask, (x - 8) ** 2 + (y - 8) ** 2 < 16)
    assert mask[8, 11] and not mask[8, 12] and not mask[8, 4] and mask[8, 5]


def test_default_invert_and_contrast_check(trpv1, stacks):
    from cryospin.io import open_particles

    # RELION stacks are protein-bright: inverted for the core's protein-dark forward model
    # (established in test_trpv1_end_to_end.py)
    assert default_invert(trpv1) is True
    assert measure_contrast(trpv1)[0] > 0.2
    assert contrast_mismatch(trpv1, invert=True) is None
    assert "protein-bright" in contrast_mismatch(trpv1, invert=False)
    # cryoSPARC blob/sign -1: a protein-dark stack, left as it is
    cs = open_particles(stacks / "empiar-10076" / "empiar_10076_7.cs")
    assert default_invert(cs) is False
    assert measure_contrast(cs)[1] < -5
    assert contrast_mismatch(cs, invert=False) is None
    # the same dark stack named by a RELION 3.0 STAR: the format default is wrong, and detected
    star = open_particles(stacks / "empiar-10076" / "empiar_10076_7.star")
    message = contrast_mismatch(star, default_invert(star))
    assert "empiar_10076_7.star: particles look protein-dark" in message
    assert "use invert=False" in message


def test_engine_asks_the_registered_source_for_the_contrast_default(trpv1):
    """The engine's default goes through the registry to cryospin-io's rule (no copy in core)."""
    from cryospin.core.engine.data import default_invert as engine_default

    assert engine_default(trpv1) is default_invert(trpv1) is True
