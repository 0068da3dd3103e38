"""Writers: STAR, .cs and cryoDRGN pkl round trips of poses; MRC stacks and maps; atomicity."""

from __future__ import annotations

import shutil

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from cryospin.core.atomic import atomic_path
from cryospin.core.particles import CTFParams
from cryospin.core.so3 import geodesic_distance_deg, random_rotations
from cryospin.io import (
    StackWriter,
    new_particle_stack,
    open_particles,
    read_ctf_pkl,
    read_map,
    read_poses_pkl,
    stack_image_names,
    write_cs,
    write_ctf_pkl,
    write_map,
    write_mrc_stack,
    write_poses_pkl,
    write_star,
)


def _deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(geodesic_distance_deg(torch.tensor(a), torch.tensor(b)).max())


def _random_poses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    rot = random_rotations(n, generator=gen, dtype=torch.float64).numpy()
    shifts = np.random.default_rng(seed).normal(scale=5.0, size=(n, 2))
    return rot, shifts


@pytest.mark.filterwarnings("ignore:.*header pixel size 1 Å disagrees")
@pytest.mark.parametrize(
    "relpath",
    [
        "aspire-sample/sample_particles_relion31.star",
        "aspire-sample/sample_relion_data.star",
        "relion31/relion31.star",
    ],
)
def test_star_roundtrip_same_poses(stacks, tmp_path, relpath):
    src = stacks / relpath
    s = open_particles(src)
    out = tmp_path / "out.star"
    write_star(out, s)
    t = open_particles(out, datadir=src.parent)
    assert _deg(s.rotations, t.rotations) < 1e-5
    np.testing.assert_allclose(t.shifts_A, s.shifts_A, atol=1e-6)
    # every original column kept, rlnImageName included, and a 3.1 optics block
    blocks = starfile.read(out, always_dict=True)
    assert set(s.metadata.columns) - {"rlnOriginX", "rlnOriginY"} <= set(blocks["particles"])
    assert list(blocks["particles"]["rlnImageName"]) == list(s.metadata["rlnImageName"])
    assert "rlnOpticsGroup" in blocks["optics"] and "rlnImagePixelSize" in blocks["optics"]
    assert out.read_text().startswith("# version 30001")
    assert t.pixel_size_A == pytest.approx(s.pixel_size_A)
    np.testing.assert_allclose(t.ctf.voltage_kV, s.ctf.voltage_kV)
    np.testing.assert_array_equal(t.half_set, s.half_set)


def test_star_write_new_poses(trpv1, tmp_path):
    rot, shifts = _random_poses(len(trpv1))
    out = tmp_path / "new.star"
    write_star(out, trpv1, rotations=rot, shifts_A=shifts)
    t = open_particles(out, stack=trpv1.images.files[0])
    assert _deg(rot, t.rotations) < 1e-5
    np.testing.assert_allclose(t.shifts_A, shifts, atol=1e-6)
    assert np.all(t.optics_group == 7)


def test_cs_roundtrip(metadata_dir, tmp_path):
    s = open_particles(metadata_dir / "cryosparc_P12_J24_001_particles.cs", images=False)
    out = tmp_path / "out.cs"
    write_cs(out, s)
    t = open_particles(out, images=False)
    assert _deg(s.rotations, t.rotations) < 1e-5
    np.testing.assert_allclose(t.shifts_A, s.shifts_A, rtol=1e-6, atol=1e-5)
    rot, shifts = _random_poses(len(s), seed=3)
    write_cs(out, s, rotations=rot, shifts_A=shifts)
    t = open_particles(out, images=False)
    assert _deg(rot, t.rotations) < 1e-5
    np.testing.assert_allclose(t.shifts_A, shifts, atol=1e-4)


def test_cs_adds_alignment_fields(stacks, tmp_path):
    folder = stacks / "empiar-10076"
    s = open_particles(folder / "empiar_10076_7.cs")
    rot, shifts = _random_poses(len(s), seed=4)
    out = tmp_path / "posed.cs"
    write_cs(out, s, rotations=rot, shifts_A=shifts)
    t = open_particles(out, datadir=folder)
    assert _deg(rot, t.rotations) < 1e-5
    np.testing.assert_allclose(t.shifts_A, shifts, atol=1e-4)
    assert t.images.read(np.array([0])).shape == (1, 320, 320)


def test_star_and_cs_agree_on_poses(metadata_dir, tmp_path):
    """A .cs written as STAR reads back to the same rotations and shifts."""
    s = open_particles(metadata_dir / "cryosparc_P12_J24_001_particles.cs", images=False)
    n = 50
    sub = new_particle_stack(
        stack_image_names("stack.mrcs", n),
        s.ctf.subset(np.arange(n)),
        s.pixel_size_A,
        s.box,
        rotations=s.rotations[:n],
        shifts_A=s.shifts_A[:n],
    )
    write_star(tmp_path / "cs.star", sub)
    t = open_particles(tmp_path / "cs.star", images=False)
    assert _deg(s.rotations[:n], t.rotations) < 1e-5
    np.testing.assert_allclose(t.shifts_A, s.shifts_A[:n], atol=1e-6)


def test_cryodrgn_pkls(trpv1, tmp_path, shared_data):
    write_poses_pkl(
        tmp_path / "poses.pkl", trpv1.rotations, trpv1.shifts_A, trpv1.box, trpv1.pixel_size_A
    )
    rot, shifts = read_poses_pkl(tmp_path / "poses.pkl", trpv1.box, trpv1.pixel_size_A)
    assert _deg(rot, trpv1.rotations) < 1e-4  # float32 in the file, as cryoDRGN writes
    np.testing.assert_allclose(shifts, trpv1.shifts_A, atol=1e-4)
    write_ctf_pkl(tmp_path / "ctf.pkl", trpv1.ctf, trpv1.box, trpv1.pixel_size_A)
    ctf, box, apix = read_ctf_pkl(tmp_path / "ctf.pkl")
    assert (box, apix) == (48, pytest.approx(4.88))
    np.testing.assert_allclose(ctf.defocus_u_A, trpv1.ctf.defocus_u_A, rtol=1e-6)
    # the real EMPIAR-10028 ctf.pkl (MANIFEST: D 360, 1.34 Å, 300 kV, Cs 2, w 0.1)
    ctf, box, apix = read_ctf_pkl(shared_data / "empiar-10028" / "ctf.pkl")
    assert len(ctf.defocus_u_A) == 105247 and box == 360 and apix == pytest.approx(1.34)
    assert np.all(ctf.voltage_kV == 300) and np.all(ctf.cs_mm == 2.0)
    assert ctf.defocus_u_A.min() == pytest.approx(8112, abs=1)
    assert ctf.defocus_u_A.max() == pytest.approx(38473, abs=1)


def test_new_stack_write_and_read(tmp_path):
    n, box = 6, 32
    images = np.random.default_rng(1).normal(size=(n, box, box)).astype(np.float32)
    write_mrc_stack(tmp_path / "sim.mrcs", images, 1.5)
    ones = np.ones(n)
    ctf = CTFParams(
        ones * 1e4, ones * 1.1e4, ones * 30, ones * 300, ones * 2.7, ones * 0.1, 0 * ones
    )
    rot, shifts = _random_poses(n)
    meta = new_particle_stack(
        stack_image_names("sim.mrcs", n),
        ctf,
        1.5,
        box,
        rotations=rot,
        shifts_A=shifts,
        half_set=np.array([1, 2] * 3),
    )
    write_star(tmp_path / "sim.star", meta)
    s = open_particles(tmp_path / "sim.star")
    assert (len(s), s.box, s.pixel_size_A) == (n, box, 1.5)
    np.testing.assert_array_equal(s.images.read(np.arange(n)), images)
    assert _deg(rot, s.rotations) < 1e-5
    np.testing.assert_allclose(s.ctf.defocus_v_A, ctf.defocus_v_A)
    np.testing.assert_array_equal(s.half_set, [1, 2] * 3)


def test_stack_writer_batches(tmp_path):
    images = np.arange(5 * 8 * 8, dtype=np.float32).reshape(5, 8, 8)
    with StackWriter(tmp_path / "w.mrcs", 5, 8, 2.5) as w:
        w.write(images[:2])
        assert not (tmp_path / "w.mrcs").exists()  # only the temporary file exists yet
        w.write(images[2:])
    with mrcfile.open(tmp_path / "w.mrcs") as m:
        np.testing.assert_array_equal(m.data, images)
        assert m.voxel_size.x == pytest.approx(2.5)


def test_map_roundtrip_and_header(tmp_path):
    vol = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32)
    vol[2, 5, 9] = 10.0  # [z, y, x]
    write_map(tmp_path / "m.mrc", vol, 3.25)
    back, voxel = read_map(tmp_path / "m.mrc")
    np.testing.assert_array_equal(back, vol)
    assert voxel == pytest.approx(3.25)
    with mrcfile.open(tmp_path / "m.mrc") as m:
        h = m.header
        assert int(h.mode) == 2
        assert (int(h.mapc), int(h.mapr), int(h.maps)) == (1, 2, 3)
        assert (float(h.origin.x), float(h.origin.y), float(h.origin.z)) == (0, 0, 0)
        assert (int(h.nxstart), int(h.nystart), int(h.nzstart)) == (0, 0, 0)
        assert float(h.cella.x) == pytest.approx(16 * 3.25)  # ChimeraX scale: cell = n * voxel
        assert m.is_volume()
        assert m.data[2, 5, 9] == 10.0  # x fastest on disk (MRC order)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "keep.star"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.star"]


def test_datadir_by_relative_path_and_by_name(stacks, tmp_path):
    """RELION writes Extract/jobNNN/... paths: found under --datadir by path or by file name."""
    src = stacks / "relion31" / "relion31.star"
    blocks = starfile.read(src, always_dict=True)
    particles = blocks["particles"].copy()
    particles["rlnImageName"] = [
        n.replace("relion31.mrcs", "Extract/job133/Micrographs/relion31.mrcs")
        for n in particles["rlnImageName"]
    ]
    star = tmp_path / "moved.star"
    starfile.write({"optics": blocks["optics"], "particles": particles}, star)
    with pytest.warns(UserWarning):
        s = open_particles(star, datadir=stacks / "relion31")  # by file name
    assert s.images.files == [stacks / "relion31" / "relion31.mrcs"]
    project = tmp_path / "project"
    (project / "Extract/job133/Micrographs").mkdir(parents=True)
    shutil.copy(stacks / "relion31" / "relion31.mrcs", project / "Extract/job133/Micrographs")
    with pytest.warns(UserWarning):
        s = open_particles(star, datadir=project)  # by relative path
    assert s.images.files == [project / "Extract/job133/Micrographs/relion31.mrcs"]


def test_cryosparc_project_prefix(stacks, tmp_path):
    folder = stacks / "empiar-10076"
    data = np.load(folder / "empiar_10076_7.cs")
    data = data.astype(
        [(n, data.dtype[n]) if n != "blob/path" else (n, "S80") for n in data.dtype.names]
    )
    data["blob/path"] = b">J1/extract/empiar_10076_7.mrc"
    with open(tmp_path / "p.cs", "wb") as fh:
        np.save(fh, data)
    s = open_particles(tmp_path / "p.cs", datadir=folder)
    assert s.images.files == [folder / "empiar_10076_7.mrc"]


def test_multi_stack_reader_order_and_lazy(tmp_path):
    """One reader over several stacks returns images in metadata order, any request order."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 8, 8)).astype(np.float32)
    b = rng.normal(size=(3, 8, 8)).astype(np.float32)
    write_mrc_stack(tmp_path / "a.mrcs", a, 1.0)
    write_mrc_stack(tmp_path / "b.mrcs", b, 1.0)
    names = ["2@b.mrcs", "1@a.mrcs", "4@a.mrcs", "3@b.mrcs", "1@b.mrcs"]
    ones = np.ones(len(names))
    ctf = CTFParams(ones, ones, ones, ones * 300, ones, ones * 0.1, ones * 0)
    write_star(tmp_path / "ab.star", new_particle_stack(names, ctf, 1.0, 8))
    s = open_particles(tmp_path / "ab.star")
    expected = np.stack([b[1], a[0], a[3], b[2], b[0]])
    np.testing.assert_array_equal(s.images.read(np.arange(5)), expected)
    order = np.array([4, 0, 2, 2, 1])
    np.testing.assert_array_equal(s.images.read(order), expected[order])


def test_engine_bridge_methods(trpv1, tmp_path):
    """The optional methods core's engine I/O bridge looks up on registered image sources."""
    from cryospin.core.registry import get_registry

    reg = get_registry()
    star_src = reg.get("image_source", "relion-star")
    vol = np.zeros((8, 8, 8), np.float32)
    star_src.write_map(tmp_path / "m.mrc", vol, 2.0)
    assert star_src.read_map(tmp_path / "m.mrc")[1] == pytest.approx(2.0)
    rot, shifts = _random_poses(len(trpv1))
    star_src.write_poses(tmp_path / "p.star", trpv1, rot, shifts)
    assert _deg(open_particles(tmp_path / "p.star", images=False).rotations, rot) < 1e-5
    star_src.write_poses_pkl(tmp_path / "p.pkl", rot, shifts, trpv1.pixel_size_A, trpv1.box)
    r2, s2 = read_poses_pkl(tmp_path / "p.pkl", trpv1.box, trpv1.pixel_size_A)
    np.testing.assert_allclose(s2, shifts, atol=1e-4)


def test_cs_to_star_conversion(stacks, tmp_path):
    """A .cs stack written as a RELION STAR: names from blob/idx and blob/path, same images."""
    folder = stacks / "empiar-10076"
    cs = open_particles(folder / "empiar_10076_7.cs")
    rot, shifts = _random_poses(len(cs), seed=6)
    write_star(tmp_path / "from_cs.star", cs, rotations=rot, shifts_A=shifts)
    star = open_particles(tmp_path / "from_cs.star", datadir=folder)
    assert star.metadata["rlnImageName"][0] == "000001@empiar_10076_7.mrc"
    np.testing.assert_array_equal(star.images.read(np.arange(7)), cs.images.read(np.arange(7)))
    np.testing.assert_allclose(star.ctf.defocus_angle_deg, cs.ctf.defocus_angle_deg, rtol=1e-9)
    assert star.pixel_size_A == pytest.approx(cs.pixel_size_A)
    assert _deg(rot, star.rotations) < 1e-5
