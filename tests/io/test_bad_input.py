"""Malformed input: one InputError line naming the file, row or field; CLI exit 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryospin.core.errors import InputError
from cryospin.io import open_particles, write_mrc_stack

STAR = """
data_optics

loop_
_rlnOpticsGroup
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
{optics}

data_particles

loop_
_rlnImageName
_rlnDefocusU
_rlnDefocusV
_rlnDefocusAngle
_rlnOpticsGroup
{particles}
"""


def _star(
    tmp_path: Path,
    optics: str = "1 300 2.7 0.1 2.0",
    particles: str | None = None,
    name: str = "p.star",
) -> Path:
    if particles is None:
        particles = "\n".join(f"{i}@stack.mrcs 10000 11000 5 1" for i in (1, 2, 3))
    path = tmp_path / name
    path.write_text(STAR.format(optics=optics, particles=particles))
    return path


@pytest.fixture
def stack_file(tmp_path: Path) -> Path:
    path = tmp_path / "stack.mrcs"
    write_mrc_stack(path, np.random.default_rng(0).normal(size=(3, 16, 16)), 2.0)
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_valid_baseline(tmp_path, stack_file):
    s = open_particles(_star(tmp_path))
    assert (len(s), s.box, s.pixel_size_A) == (3, 16, 2.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_pixels(tmp_path, stack_file):
    data = np.zeros((3, 16, 16), np.float32)
    data[1, 3, 4] = np.nan
    write_mrc_stack(stack_file, data, 2.0)
    s = open_particles(_star(tmp_path))
    s.images.read(np.array([0, 2]))
    with pytest.raises(InputError) as exc:
        s.images.read(np.array([0, 1]))
    assert "stack.mrcs: image 2" in _one_line(exc) and "NaN or inf" in str(exc.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_inf_pixels(tmp_path, stack_file):
    data = np.zeros((3, 16, 16), np.float32)
    data[2, 0, 0] = np.inf
    write_mrc_stack(stack_file, data, 2.0)
    with pytest.raises(InputError, match="image 3"):
        open_particles(_star(tmp_path)).images.read(np.arange(3))


def test_unsupported_mode(tmp_path, stack_file):
    with mrcfile.new(stack_file, overwrite=True) as m:
        m.set_data(np.zeros((3, 16, 16), np.complex64))
    with pytest.raises(InputError) as exc:
        open_particles(_star(tmp_path))
    assert "stack.mrcs: unsupported MRC mode 4" in _one_line(exc)


def test_truncated(tmp_path, stack_file):
    os.truncate(stack_file, os.path.getsize(stack_file) - 100)
    with pytest.raises(InputError) as exc:
        open_particles(_star(tmp_path))
    assert "stack.mrcs: file is truncated" in _one_line(exc)


def test_non_square(tmp_path, stack_file):
    with mrcfile.new(stack_file, overwrite=True) as m:
        m.set_data(np.zeros((3, 16, 20), np.float32))
    with pytest.raises(InputError, match="header nx = 20, ny = 16; expected square"):
        open_particles(_star(tmp_path))


def test_odd_target_box(tmp_path, stack_file):
    from cryospin.core.engine.data import ParticleData

    s = open_particles(_star(tmp_path))
    with pytest.raises(InputError, match="box 7 must be even and at most the stack's 16"):
        ParticleData(s, box=7, invert=False)


def test_index_out_of_range(tmp_path, stack_file):
    particles = "1@stack.mrcs 1 1 0 1\n4@stack.mrcs 1 1 0 1"
    with pytest.raises(InputError) as exc:
        open_particles(_star(tmp_path, particles=particles))
    assert "p.star: row 2: rlnImageName names image 4, out of range" in _one_line(exc)
    assert "holds 3 images" in str(exc.value)


def test_zero_index(tmp_path, stack_file):
    with pytest.raises(InputError, match="row 1: .*1-based"):
        open_particles(_star(tmp_path, particles="0@stack.mrcs 1 1 0 1"))


def test_missing_columns(tmp_path, stack_file):
    path = tmp_path / "m.star"
    path.write_text("data_\nloop_\n_rlnImageName\n_rlnDefocusU\n1@stack.mrcs 10000\n")
    with pytest.raises(InputError) as exc:
        open_particles(path)
    msg = _one_line(exc)
    assert "m.star: missing required column(s)" in msg
    assert "rlnVoltage" in msg and "rlnSphericalAberration" in msg


def test_duplicate_optics_group(tmp_path, stack_file):
    optics = "1 300 2.7 0.1 2.0\n1 200 2.7 0.1 2.0"
    with pytest.raises(InputError) as exc:
        open_particles(_star(tmp_path, optics=optics))
    assert "optics group 1 appears 2 times" in _one_line(exc)


def test_unknown_optics_group(tmp_path, stack_file):
    with pytest.raises(InputError, match="row 1: rlnOpticsGroup 3 is not in data_optics"):
        open_particles(_star(tmp_path, particles="1@stack.mrcs 1 1 0 3"))


@pytest.mark.parametrize("apix", ["0", "-1.5"])
def test_bad_pixel_size(tmp_path, stack_file, apix):
    with pytest.raises(InputError) as exc:
        open_particles(_star(tmp_path, optics=f"1 300 2.7 0.1 {apix}"))
    assert f"p.star: data_optics row 1: rlnImagePixelSize is {float(apix)}" in _one_line(exc)
    assert "expected 0 < value <= 100 Å" in str(exc.value)


def test_header_disagrees_metadata_wins(tmp_path, stack_file):
    with pytest.warns(UserWarning, match="stack.mrcs: header pixel size 2 Å disagrees"):
        s = open_particles(_star(tmp_path, optics="1 300 2.7 0.1 3.0"))
    assert s.pixel_size_A == 3.0


def test_missing_stack_lists_every_path(tmp_path):
    datadir = tmp_path / "data"
    datadir.mkdir()
    star = _star(tmp_path, particles="1@Extract/job1/stack.mrcs 1 1 0 1")
    with pytest.raises(InputError) as exc:
        open_particles(star, datadir=datadir)
    msg = _one_line(exc)
    for tried in (
        tmp_path / "Extract/job1/stack.mrcs",
        datadir / "Extract/job1/stack.mrcs",
        datadir / "job1/stack.mrcs",
        datadir / "stack.mrcs",
    ):
        assert str(tried) in msg


def test_stack_override_needs_single_stack(tmp_path, stack_file):
    shutil.copy(stack_file, tmp_path / "other.mrcs")
    particles = "1@stack.mrcs 1 1 0 1\n1@other.mrcs 1 1 0 1"
    with pytest.raises(InputError, match="--stack replaces a single stack.*2 stacks"):
        open_particles(_star(tmp_path, particles=particles), stack=stack_file)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("")
    with pytest.raises(InputError, match="no image source reads '.txt'"):
        open_particles(path)


def test_cs_missing_fields(tmp_path):
    path = tmp_path / "bad.cs"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3, dtype=[("ctf/df1_A", "f4")]))
    with pytest.raises(InputError, match="bad.cs: missing required field"):
        open_particles(path)


def test_cli_exits_2_without_traceback(tmp_path, stack_file):
    star = _star(tmp_path, optics="1 300 2.7 0.1 2.0\n1 200 2.7 0.1 2.0")
    result = subprocess.run(
        [sys.executable, "-m", "cryospin.core", "info", str(star)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "p.star" in lines[0] and "optics group 1" in lines[0]


def _cube(path: Path, ispg: int, cella: float) -> None:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
        m.header.ispg, m.header.mz = ispg, 16
        m.header.cella = (cella, cella, cella)


def test_cubic_stacks_are_stacks(tmp_path):
    # RELION writes stacks with ispg 1, mz = nz and cella 0: 16 images of 16 px are a stack.
    _cube(tmp_path / "stack.mrcs", ispg=1, cella=0.0)
    assert len(open_particles(_star(tmp_path))) == 3
    # An MRC2014 stack (ispg 0) of 16 images of 16 px given alone as .mrcs.
    _cube(tmp_path / "alone.mrcs", ispg=0, cella=32.0)
    s = open_particles(tmp_path / "alone.mrcs")
    assert (len(s), s.box, s.pixel_size_A) == (16, 16, 2.0)


@pytest.mark.parametrize(("name", "ispg", "cella"), [("map.mrc", 0, 32.0), ("map.mrcs", 1, 32.0)])
def test_map_is_not_a_stack(tmp_path, name, ispg, cella):
    # A cryoDRGN map (ispg 0, .mrc) given alone, or a full map header (ispg 1, isotropic cella).
    _cube(tmp_path / name, ispg=ispg, cella=cella)
    with pytest.raises(InputError) as exc:
        open_particles(tmp_path / name)
    assert f"{name}: a 3-D map, not a particle stack" in _one_line(exc)
