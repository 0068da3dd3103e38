"""Every real file in ../shared/data/real-stacks and metadata/, against MANIFEST.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryospin.core.errors import InputError
from cryospin.core.so3 import geodesic_distance_deg
from cryospin.io import open_particles, read_map
from cryospin.io.mrc import read_stack_header


def test_trpv1(trpv1, stacks):
    s = trpv1
    assert (len(s), s.box) == (10, 48)
    assert s.pixel_size_A == pytest.approx(4.88)
    assert np.all(s.ctf.voltage_kV == 300) and np.all(s.ctf.cs_mm == 2.0)
    assert np.all(s.ctf.amplitude_contrast == pytest.approx(0.1))
    assert s.ctf.defocus_u_A[0] == pytest.approx(14657.509766)
    assert s.ctf.defocus_angle_deg[0] == pytest.approx(53.749996)
    assert s.rotations.shape == (10, 3, 3) and s.shifts_A.shape == (10, 2)
    assert s.shifts_A[0] == pytest.approx([-8.149219, -6.120969])
    assert np.all(s.optics_group == 7)
    assert s.half_set.tolist() == [2, 1] * 5
    assert s.images.read(np.arange(10)).shape == (10, 48, 48)
    volume, voxel = read_map(stacks / "trpv1" / "trpv1_volume.mrc")
    assert volume.shape == (48, 48, 48) and voxel == pytest.approx(4.88)


def test_trpv1_without_override_lists_paths(stacks):
    with pytest.raises(InputError, match="batch_0_restacked.mrc.*tried:.*trpv1"):
        open_particles(stacks / "trpv1" / "trpv1_small_stack.star")


def test_empiar10076_star_and_cs_agree(stacks):
    folder = stacks / "empiar-10076"
    star = open_particles(folder / "empiar_10076_7.star")
    cs = open_particles(folder / "empiar_10076_7.cs")
    for s in (star, cs):
        assert (len(s), s.box) == (7, 320)
        assert s.pixel_size_A == pytest.approx(1.31, abs=1e-4)  # header says 0: metadata wins
        assert s.rotations is None
        assert np.all(s.ctf.voltage_kV == 300) and np.all(s.ctf.cs_mm == pytest.approx(2.7))
        assert np.all(s.ctf.amplitude_contrast == pytest.approx(0.07))
    assert star.extra["star_version"] == "3.0"
    np.testing.assert_allclose(star.ctf.defocus_u_A, cs.ctf.defocus_u_A, rtol=1e-6)
    np.testing.assert_allclose(star.ctf.defocus_v_A, cs.ctf.defocus_v_A, rtol=1e-6)
    np.testing.assert_allclose(star.ctf.defocus_angle_deg, cs.ctf.defocus_angle_deg, atol=1e-4)
    idx = np.array([6, 0, 3])
    np.testing.assert_array_equal(star.images.read(idx), cs.images.read(idx))
    assert read_stack_header(folder / "empiar_10076_7.mrc").pixel_size_A == 0
    assert cs.extra["blob_sign"] == -1


def test_relion31(stacks):
    with pytest.warns(UserWarning, match="header pixel size 1 Å disagrees"):
        s = open_particles(stacks / "relion31" / "relion31.star")
    assert (len(s), s.box) == (5, 256)
    assert s.pixel_size_A == pytest.approx(2.806)
    assert np.all(s.ctf.cs_mm == pytest.approx(0.01))
    assert s.rotations.shape == (5, 3, 3)
    assert s.shifts_A[0] == pytest.approx([0.019324, -0.64686])
    assert s.images.read(np.array([4])).shape == (1, 256, 256)


def test_relion31_six_optics_groups(stacks):
    with pytest.warns(UserWarning, match=r"1.24 Å \(groups 2, 5\), 1.25 Å \(groups 1, 3, 4, 6\)"):
        s = open_particles(stacks / "relion31" / "relion31.6opticsgroups.star", images=False)
    assert s.pixel_size_A == 1.24  # the smallest: the others are Fourier-rescaled to it
    assert len(s) == 139 and s.box == 196
    assert sorted(set(s.optics_group.tolist())) == [1, 2, 3, 4, 5, 6]
    assert len(s.optics) == 6
    # Each particle gets its own group's values: group 4 has Cs 2.6, the others 2.7.
    np.testing.assert_allclose(s.ctf.cs_mm, np.where(s.optics_group == 4, 2.6, 2.7))
    assert np.all(s.ctf.voltage_kV == 200)
    assert s.rotations.shape == (139, 3, 3)


def test_aspire_30_and_31(stacks):
    folder = stacks / "aspire-sample"
    v30 = open_particles(folder / "sample_relion_data.star")
    v31 = open_particles(folder / "sample_particles_relion31.star")
    for s in (v30, v31):
        assert (len(s), s.box) == (17, 200)
        assert np.all(s.ctf.cs_mm == pytest.approx(2.7))
        assert np.all(s.ctf.amplitude_contrast == pytest.approx(0.1))
        assert s.half_set is not None
    assert v30.pixel_size_A == pytest.approx(1.338, abs=1e-3)  # 5 µm / 37369.2
    assert v30.extra["star_version"] == "3.0" and np.all(v30.ctf.voltage_kV == 300)
    # origins in pixels in 3.0, converted to Å
    np.testing.assert_allclose(v30.shifts_A[0], [0.1996 * v30.pixel_size_A] * 2, rtol=1e-6)
    # 3.1 file: two optics groups, the second set to 200 kV by hand; its own pixel size 1.4
    assert v31.pixel_size_A == pytest.approx(1.4)
    np.testing.assert_array_equal(v31.optics_group, [1] * 8 + [2] * 9)
    np.testing.assert_array_equal(v31.ctf.voltage_kV, [300.0] * 8 + [200.0] * 9)
    d = geodesic_distance_deg(torch.tensor(v30.rotations), torch.tensor(v31.rotations))
    # row 15 of the 3.1 file repeats row 14 (an upstream edit); every other row matches
    assert d[np.arange(17) != 14].max() < 1e-6 and d[14] > 1
    np.testing.assert_array_equal(v30.half_set, [2, 2, 1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 1, 1, 1, 1, 2])


def test_cryosparc_refinement(metadata_dir):
    s = open_particles(metadata_dir / "cryosparc_P12_J24_001_particles.cs", images=False)
    assert (len(s), s.box) == (2019, 180)
    assert s.pixel_size_A == pytest.approx(2.95)
    assert np.all(s.ctf.voltage_kV == 200) and np.all(s.ctf.cs_mm == 2.0)
    assert s.rotations.shape == (2019, 3, 3)
    r = s.rotations
    eye = np.broadcast_to(np.eye(3), r.shape)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), eye, atol=1e-6)
    # shift in pixels times the alignment pixel size
    assert s.shifts_A[0] == pytest.approx(np.array([11.334375, -1.828125]) * 2.95, rel=1e-6)
    assert sorted(np.unique(s.half_set)) == [1, 2]


def test_pfcrt_relion30(metadata_dir):
    with pytest.warns(UserWarning, match="no rlnAmplitudeContrast"):
        s = open_particles(
            metadata_dir / "FinalRefinement-OriginalParticles-PfCRT.star", images=False
        )
    assert len(s) == 5
    assert s.pixel_size_A == pytest.approx(1.035)
    assert s.rotations.shape == (5, 3, 3)
    assert s.ctf.defocus_u_A[0] == pytest.approx(15686.0)
    assert s.shifts_A[0] == pytest.approx([-0.14063 * 1.035, -0.04688 * 1.035])


@pytest.mark.parametrize(
    ("relpath", "shape", "header_apix"),
    [
        ("trpv1/trpv1_small_stack.mrcs", (10, 48, 48), 4.88),
        ("relion31/relion31.mrcs", (5, 256, 256), 1.0),
        ("aspire-sample/sample.mrcs", (17, 200, 200), 0.0),
        ("empiar-10076/empiar_10076_7.mrc", (7, 320, 320), 0.0),
    ],
)
def test_bare_stacks(stacks, relpath, shape, header_apix):
    path = stacks / relpath
    h = read_stack_header(path)
    assert (h.n, h.box, h.box) == shape
    assert h.pixel_size_A == pytest.approx(header_apix)
    if header_apix > 0:
        s = open_particles(path)
        assert (len(s), s.box) == shape[:2]
        assert s.images.read(np.array([shape[0] - 1, 0])).shape == (2, *shape[1:])
    else:
        with pytest.raises(InputError, match="header pixel size is 0"):
            open_particles(path)


def test_maps(shared_data):
    vol, voxel = read_map(shared_data / "maps" / "EMD-3197.map")
    assert vol.shape == (20, 20, 20) and voxel == pytest.approx(11.4)
    vol, voxel = read_map(shared_data / "maps" / "ribosome_4ug0_potential_4A.mrc")
    assert vol.shape == (80, 80, 80) and voxel == pytest.approx(4.0)
    with pytest.raises(InputError, match="EMD-3001.map: map has shape \\(25, 43, 73\\)"):
        read_map(shared_data / "maps" / "EMD-3001.map")
