"""cryoSPARC particle files for STAR stacks, and image names that resolve from another folder.

Real files: the TRPV1 STAR (whose stack is shipped under another name, hence ``stack=``) and
EMPIAR-10076's ``.cs``. References: the input file's own values and pixels, scipy's rotation
vector (cryoSPARC ``A = exp(pose)^T``, docs/CONVENTIONS.md item 10).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryospin.io import open_particles
from cryospin.io.cryosparc import read_cs, write_cs
from cryospin.io.star import read_star, write_star


def _poses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rot = Rotation.random(n, random_state=seed).as_matrix()
    shifts = np.random.default_rng(seed).uniform(-10, 10, (n, 2))
    return rot, shifts


def _absolute(stack):
    return dataclasses.replace(stack, extra={**stack.extra, "absolute_image_paths": True})


def test_star_stack_as_cs_round_trips_through_the_reader(trpv1, tmp_path):
    rot, shifts = _poses(len(trpv1))
    path = tmp_path / "sub" / "p.cs"
    path.parent.mkdir()
    write_cs(path, _absolute(trpv1), rot, shifts)
    back = read_cs(path)  # the images resolve: absolute blob/path
    n = len(trpv1)
    np.testing.assert_array_equal(back.images.read(np.arange(n)), trpv1.images.read(np.arange(n)))
    for field in ("defocus_u_A", "defocus_v_A", "defocus_angle_deg", "voltage_kV", "cs_mm"):
        np.testing.assert_allclose(
            getattr(back.ctf, field), getattr(trpv1.ctf, field), rtol=1e-6, err_msg=field
        )
    np.testing.assert_allclose(back.rotations, rot, atol=2e-6)
    np.testing.assert_allclose(back.shifts_A, shifts, atol=1e-4)
    np.testing.assert_array_equal(back.half_set, trpv1.half_set)
    assert back.pixel_size_A == pytest.approx(trpv1.pixel_size_A)
    assert back.extra["blob_sign"] == 1.0  # RELION stacks are inverted: protein-bright sign
    raw = np.load(path)
    exp = Rotation.from_rotvec(raw["alignments3D/pose"].astype(np.float64)).as_matrix()
    np.testing.assert_allclose(exp, rot.transpose(0, 2, 1), atol=2e-6)
    np.testing.assert_array_equal(raw["blob/shape"], np.full((n, 2), 48))
    np.testing.assert_array_equal(raw["ctf/exp_group_id"], 7)
    assert len(np.unique(raw["uid"])) == n


def test_subset_names_the_original_images_by_absolute_path(trpv1, tmp_path):
    keep = np.array([7, 2, 9])
    sub = _absolute(trpv1.subset(keep))
    rot, shifts = _poses(3, seed=1)
    write_star(tmp_path / "s.star", sub, rot, shifts)
    write_cs(tmp_path / "s.cs", sub, rot, shifts)
    expected = trpv1.images.read(keep)
    star, cs = read_star(tmp_path / "s.star"), read_cs(tmp_path / "s.cs")
    stack_file = trpv1.images.files[0].resolve()
    assert list(star.metadata["rlnImageName"]) == [f"{k + 1:06d}@{stack_file}" for k in keep]
    np.testing.assert_array_equal(np.load(tmp_path / "s.cs")["blob/idx"], keep)
    np.testing.assert_array_equal(star.images.read(np.arange(3)), expected)
    np.testing.assert_array_equal(cs.images.read(np.arange(3)), expected)
    np.testing.assert_allclose(star.ctf.defocus_u_A, trpv1.ctf.defocus_u_A[keep])
    np.testing.assert_array_equal(star.half_set, trpv1.half_set[keep])
    # without the flag the names are kept as written (the STAR names batch_0_restacked.mrc)
    write_star(tmp_path / "k.star", trpv1.subset(keep))
    names = read_star(tmp_path / "k.star", images=False).metadata["rlnImageName"]
    assert list(names) == [f"{k + 1:06d}@./batch_0_restacked.mrc" for k in keep]


def test_pixel_size_override_is_written_into_the_optics_group(trpv1, tmp_path):
    stack = dataclasses.replace(
        trpv1, pixel_size_A=5.0, extra={**trpv1.extra, "pixel_size_override": True}
    )
    write_star(tmp_path / "a.star", stack)
    assert read_star(tmp_path / "a.star", images=False).pixel_size_A == pytest.approx(5.0)
    write_star(tmp_path / "b.star", trpv1)  # no override: the file's own 4.88 Å
    assert read_star(tmp_path / "b.star", images=False).pixel_size_A == pytest.approx(4.88)


def test_cs_input_gets_absolute_blob_paths(stacks, tmp_path):
    folder = stacks / "empiar-10076"
    cs = open_particles(folder / "empiar_10076_7.cs")
    rot, shifts = _poses(len(cs), seed=2)
    write_cs(tmp_path / "p.cs", _absolute(cs), rot, shifts)
    raw, original = np.load(tmp_path / "p.cs"), np.load(folder / "empiar_10076_7.cs")
    expected = str((folder / "empiar_10076_7.mrc").resolve())
    assert {p.decode() for p in raw["blob/path"]} == {expected}
    for name in original.dtype.names:  # every other field kept as it was
        if name != "blob/path" and not name.startswith("alignments3D/"):
            np.testing.assert_array_equal(raw[name], original[name], err_msg=name)
    back = read_cs(tmp_path / "p.cs")
    np.testing.assert_array_equal(back.images.read(np.arange(7)), cs.images.read(np.arange(7)))


def test_cs_input_with_a_pixel_size_override(stacks, tmp_path):
    cs = open_particles(stacks / "empiar-10076" / "empiar_10076_7.cs")
    extra = {**cs.extra, "pixel_size_override": True}
    stack = dataclasses.replace(cs, pixel_size_A=1.5, extra=extra)
    rot, shifts = _poses(len(cs), seed=3)
    write_cs(tmp_path / "p.cs", stack, rot, shifts)
    raw = np.load(tmp_path / "p.cs")
    np.testing.assert_allclose(raw["blob/psize_A"], 1.5)
    np.testing.assert_allclose(raw["alignments3D/psize_A"], 1.5)
    back = read_cs(tmp_path / "p.cs", images=False)
    assert back.pixel_size_A == pytest.approx(1.5)
    np.testing.assert_allclose(back.shifts_A, shifts, atol=1e-4)  # Å through pixels at 1.5 Å
