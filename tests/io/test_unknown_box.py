"""Metadata opened without its images and without a stated box: code needing the box says so."""

from __future__ import annotations

import warnings

import pytest

from cryospin.core.engine.data import ParticleData
from cryospin.core.errors import InputError
from cryospin.io import open_particles
from cryospin.io.contrast import measure_contrast


@pytest.fixture()
def no_box(metadata_dir):
    """The PfCRT STAR file states no rlnImageSize; opened without images its box is unknown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its missing rlnAmplitudeContrast
        stack = open_particles(
            metadata_dir / "FinalRefinement-OriginalParticles-PfCRT.star", images=False
        )
    assert stack.box is None
    return stack


@pytest.mark.parametrize(
    "use",
    [
        lambda s: measure_contrast(s),
        lambda s: ParticleData(s, cache=False),
    ],
    ids=["measure_contrast", "ParticleData"],
)
def test_unknown_box_is_a_one_line_input_error(no_box, use):
    with pytest.raises(InputError, match="box size unknown: open the stack with its images") as e:
        use(no_box)
    assert "FinalRefinement-OriginalParticles-PfCRT.star" in str(e.value)
