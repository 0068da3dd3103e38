"""``cryospin info`` output, and every supported MRC mode read as float32."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
from click.testing import CliRunner

from cryospin.core.cli.main import build_cli
from cryospin.core.errors import InputError
from cryospin.io import open_particles


def _info(*args: str) -> str:
    result = CliRunner().invoke(build_cli(), ["info", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_info_trpv1(stacks):
    folder = stacks / "trpv1"
    out = _info(
        str(folder / "trpv1_small_stack.star"), "--stack", str(folder / "trpv1_small_stack.mrcs")
    )
    for text in (
        "relion-star",
        "particles (N)",
        "10",
        "48",
        "4.88",
        "14,658",
        "poses",
        "1: 5, 2: 5",
        "protein bright",
        "invert by default",
        "optics groups",
        "first 5 rows",
        "rlnAngleRot",
    ):
        assert text in out, text


def test_info_metadata_only(metadata_dir):
    out = _info(str(metadata_dir / "cryosparc_P12_J24_001_particles.cs"), "--no-images")
    for text in ("cryosparc-cs", "2019", "180", "2.95", "1: 1010, 2: 1009", "blob/sign"):
        assert text in out, text


def test_info_datadir_and_warning_line(stacks):
    result = CliRunner().invoke(
        build_cli(),
        ["info", str(stacks / "relion31" / "relion31.star"), "--datadir", str(stacks)],
    )
    assert result.exit_code == 0
    assert "2.806" in result.stdout and "256" in result.stdout
    lines = [x for x in result.stderr.splitlines() if x.startswith("warning: ")]
    assert len(lines) == 1 and "header pixel size 1 Å disagrees" in lines[0]


def test_info_help_has_example():
    result = CliRunner().invoke(build_cli(), ["info", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "--datadir" in result.output


@pytest.mark.parametrize(
    ("dtype", "mode"),
    [(np.float32, 2), (np.float16, 12), (np.int16, 1), (np.uint16, 6), (np.int8, 0)],
)
def test_mrc_modes(tmp_path, dtype, mode):
    data = (np.arange(3 * 8 * 8) % 100).reshape(3, 8, 8).astype(dtype)
    path = tmp_path / "s.mrcs"
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.voxel_size = 2.0
    with mrcfile.open(path, header_only=True) as m:
        assert int(m.header.mode) == mode
    s = open_particles(path)
    images = s.images.read(np.array([2, 0]))
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images, data[[2, 0]].astype(np.float32))
    assert s.pixel_size_A == pytest.approx(2.0)


def test_single_image_file(tmp_path):
    path = tmp_path / "one.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.ones((8, 8), np.float32))
        m.voxel_size = 1.5
    s = open_particles(path)
    assert len(s) == 1 and s.images.read(np.array([0])).shape == (1, 8, 8)


def test_not_an_mrc(tmp_path):
    path = tmp_path / "junk.mrcs"
    path.write_bytes(b"nonsense" * 10)
    with pytest.raises(InputError, match="junk.mrcs: not a readable MRC file"):
        open_particles(path)
