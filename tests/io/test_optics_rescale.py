"""Optics groups with different pixel sizes: Fourier rescaling onto the smallest pixel size.

References are analytic: band-limited trigonometric images evaluated in physical coordinates
(Å), so the rescaled images of every group must equal the function on the working grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryospin.io import open_particles, write_mrc_stack
from cryospin.io.rescale import interpolation_matrix

L = 32


def _f(x: np.ndarray) -> np.ndarray:
    """A trigonometric polynomial of period L (pixels), up to the even grid's Nyquist term."""
    return (
        np.cos(2 * np.pi * 3 * x / L + 0.4)
        + 0.5 * np.sin(2 * np.pi * 7 * x / L)
        + 0.25 * np.cos(np.pi * x)  # k = L/2: on the integer grid only its cosine is seen
    )


@pytest.mark.parametrize("scale", [1.0, 0.8, 0.5, 0.9921875])
def test_interpolation_matrix_is_exact_on_band_limited_rows(scale):
    a = interpolation_matrix(L, scale)
    x_out = L // 2 + (np.arange(L) - L // 2) * scale
    np.testing.assert_allclose(a @ _f(np.arange(L)), _f(x_out), atol=1e-12)
    if scale == 1.0:
        np.testing.assert_allclose(a, np.eye(L), atol=1e-12)


def _image(pixel_A: float) -> np.ndarray:
    """``(L, L)`` samples ``[y, x]`` of a 2-D function of period 40 Å, centre at (L//2, L//2)."""
    y, x = (np.mgrid[:L, :L] - L // 2) * pixel_A
    return np.cos(2 * np.pi * (3 * x + 2 * y) / 40 + 0.3) + 0.5 * np.sin(
        2 * np.pi * (-5 * x + 4 * y) / 40
    )


STAR = """data_optics

loop_
_rlnOpticsGroup
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
1 300 2.7 0.1 1.25
2 300 2.7 0.1 1.0

data_particles

loop_
_rlnImageName
_rlnDefocusU
_rlnDefocusV
_rlnDefocusAngle
_rlnOpticsGroup
1@s.mrcs 10000 10000 0 1
2@s.mrcs 10000 10000 0 2
3@s.mrcs 10000 10000 0 1
"""


def test_groups_rescaled_to_the_smallest_pixel(tmp_path: Path):
    # Group 1 is sampled at 1.25 Å (a 40 Å field, one period), group 2 at 1.0 Å.
    write_mrc_stack(tmp_path / "s.mrcs", np.stack([_image(1.25), _image(1.0), _image(1.25)]), 1)
    (tmp_path / "p.star").write_text(STAR)
    with pytest.warns(UserWarning, match=r"1 Å \(group 2\), 1.25 Å \(group 1\).*rescaled"):
        s = open_particles(tmp_path / "p.star")
    assert s.pixel_size_A == 1.0 and s.box == L
    images = s.images.read(np.array([2, 1, 0]))
    for img in images:  # every particle now shows the function on the 1.0 Å grid
        np.testing.assert_allclose(img, _image(1.0), atol=2e-5)


def test_same_pixel_size_reads_the_file_unchanged(tmp_path: Path):
    data = np.random.default_rng(0).normal(size=(3, L, L)).astype(np.float32)
    write_mrc_stack(tmp_path / "s.mrcs", data, 1)
    (tmp_path / "p.star").write_text(STAR.replace("1 300 2.7 0.1 1.25", "1 300 2.7 0.1 1.0"))
    s = open_particles(tmp_path / "p.star")
    np.testing.assert_array_equal(s.images.read(np.arange(3)), data)


STAR_30 = """data_

loop_
_rlnImageName
_rlnDefocusU
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnMagnification
_rlnDetectorPixelSize
1@s.mrcs 10000 300 2.7 0.1 40000 5
2@s.mrcs 10000 300 2.7 0.1 50000 5
3@s.mrcs 10000 300 2.7 0.1 40000 5
"""


def test_relion30_pixel_sizes_written_back_per_particle(tmp_path: Path):
    import starfile

    from cryospin.io import write_star

    write_mrc_stack(tmp_path / "s.mrcs", np.zeros((3, L, L)), 1)
    (tmp_path / "p.star").write_text(STAR_30)
    with pytest.warns(UserWarning, match="rescaled to the smallest, 1 Å"):
        s = open_particles(tmp_path / "p.star")
    assert s.pixel_size_A == 1.0  # 5 µm / 50000
    write_star(tmp_path / "out.star", s)
    out = starfile.read(tmp_path / "out.star", always_dict=True)
    optics = out["optics"]
    size_of = dict(zip(optics["rlnOpticsGroup"], optics["rlnImagePixelSize"], strict=True))
    written = [size_of[g] for g in out["particles"]["rlnOpticsGroup"]]
    np.testing.assert_allclose(written, [1.25, 1.0, 1.25])  # 5e4 / 40000 Å, each its own
