"""Tests of ``cryospin simulate`` (cryospin.io.simulate): physics, statistics, files, CLI."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from scipy import stats

from cryospin.io.simulate import (
    AtomProjector,
    MapProjector,
    SimulationConfig,
    bundled_model_path,
    evaluate_ctf,
    haar_rotations,
    load_atom_model,
    load_ctf_table,
    nufft,
    render_clean,
    resample_map,
    simulate_dataset,
)
from cryospin.io.simulate.atoms import POTENTIAL_CONSTANT_V_A2
from cryospin.io.simulate.projector import crop_indices, drop_nyquist

BOX = 48
#: The per-particle CTFParams fields, in compute_ctf's argument order.
CTF_FIELDS = (
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
)


def _ctf_row(ctf, i):
    """Particle ``i``'s CTF parameters as floats, in compute_ctf's argument order."""
    return [float(getattr(ctf, f)[i]) for f in CTF_FIELDS]


@pytest.fixture(scope="module")
def hsp90():
    return load_atom_model(bundled_model_path("2cg9"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    cfg = SimulationConfig(
        preset="hsp90", box=BOX, n=64, snr=0.1, seed=3, shift_sigma=3.0, out=out, write_clean=True
    )
    return simulate_dataset(cfg)


def _stack(path: Path) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as m:
        return np.array(m.data, dtype=np.float64)


def _gt(sim):
    return np.load(sim.ground_truth)


# --------------------------------------------------------------------------------------------
# Bundled data
# --------------------------------------------------------------------------------------------


def test_bundled_data_is_packaged():
    data = resources.files("cryospin.io.simulate") / "data"
    names = {p.name for p in data.iterdir()}
    assert {"2cg9.pdb.gz", "6vyb.pdb.gz", "empiar10028_ctf.npz", "PROVENANCE.md"} <= names
    m = load_atom_model(bundled_model_path("6vyb"))
    assert len(m) == 22365
    table = load_ctf_table("empiar10028")
    assert len(table.defocus_u_A) == 105247
    assert table.amplitude_contrast[0] == 0.1 and table.voltage_kV[0] == 300.0


def test_bundled_ctf_table_matches_shared_copy(shared_data):
    a = load_ctf_table("empiar10028")
    b = load_ctf_table(shared_data / "empiar-10028" / "ctf.pkl")
    for k in ("defocus_u_A", "defocus_v_A", "defocus_angle_deg", "voltage_kV", "cs_mm"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_ctf_tables_from_star_and_cs(shared_data):
    star = load_ctf_table(shared_data / "real-stacks" / "relion31" / "relion31.star")
    cs = load_ctf_table(shared_data / "metadata" / "cryosparc_P12_J24_001_particles.cs")
    assert len(star.defocus_u_A) == 5 and np.all(star.defocus_u_A > 1000)
    assert len(cs.defocus_u_A) == 2019 and np.all(cs.voltage_kV == 200)


def test_model_centred_on_centre_of_mass(hsp90):
    import gemmi

    mass = np.array([gemmi.Element(e).weight for e in hsp90.elements])[hsp90.species]
    com = (hsp90.xyz_A * (mass * hsp90.weight)[:, None]).sum(0) / (mass * hsp90.weight).sum()
    np.testing.assert_allclose(com, 0, atol=1e-9)
    assert hsp90.elements == ["C", "N", "O", "P", "S"]


# --------------------------------------------------------------------------------------------
# NUFFT and projection exactness
# --------------------------------------------------------------------------------------------


def test_type1_nufft_matches_direct_sum():
    rng = np.random.default_rng(0)
    n = 16
    full, half = nufft.rfft_modes(n)
    pts = rng.uniform(-6, 6, (40, 2))
    w = rng.normal(size=40)
    sp = rng.integers(0, 2, 40)
    c = nufft.type1_rfft(pts, w, sp, 2, n)
    j0, j1 = np.meshgrid(full, half, indexing="ij")
    for s in range(2):
        m = sp == s
        ref = (
            w[m, None, None]
            * np.exp(-2j * np.pi * (j0 * pts[m, 0, None, None] + j1 * pts[m, 1, None, None]) / n)
        ).sum(0)
        assert np.abs(c[s] - ref).max() < 1e-7 * np.abs(ref).max()
    pts3 = rng.uniform(-5, 5, (25, 3))
    c3 = nufft.type1_rfft(pts3, w[:25], np.zeros(25, int), 1, n)[0]
    jz, jy, jx = np.meshgrid(full, full, half, indexing="ij")
    ph = jz[None] * pts3[:, 0, None, None, None] + jy[None] * pts3[:, 1, None, None, None]
    ph = ph + jx[None] * pts3[:, 2, None, None, None]
    ref3 = (w[:25, None, None, None] * np.exp(-2j * np.pi * ph / n)).sum(0)
    assert np.abs(c3 - ref3).max() < 1e-7 * np.abs(ref3).max()


def test_type2_nufft_matches_direct_sum():
    rng = np.random.default_rng(1)
    n = 12
    vol = rng.normal(size=(n, n, n))
    q = rng.uniform(-n / 2, n / 2, (30, 3))
    u = np.arange(n) - n // 2
    uz, uy, ux = np.meshgrid(u, u, u, indexing="ij")
    ref = np.array(
        [(vol * np.exp(-2j * np.pi * (a * uz + b * uy + c * ux) / n)).sum() for a, b, c in q]
    )
    got = nufft.Type2(vol)(q)
    assert np.abs(got - ref).max() < 1e-7 * np.abs(ref).max()


def test_atom_spectrum_matches_direct_sum_over_atoms(hsp90):
    # The projector's spectrum (FINUFFT) against the formula summed atom by atom in float64:
    # S(k) = c / apix^3 sum_a f_s(a)(|k|) w_a exp(-2 pi i (kx x'_a + ky y'_a)), x' = R x.
    pick = np.random.default_rng(3).choice(len(hsp90), 40, replace=False)
    few = dataclasses.replace(
        hsp90, xyz_A=hsp90.xyz_A[pick], species=hsp90.species[pick], weight=hsp90.weight[pick]
    )
    box, apix = 16, 3.0
    proj = AtomProjector(few, box, apix, pad=2, bfactor_A2=20.0)
    rot = haar_rotations(np.random.default_rng(4), 1)[0]
    r = few.xyz_A @ rot.T
    ky, kx = proj.ky[None], proj.kx[None]
    ff = few.form_factor(np.sqrt(ky**2 + kx**2)[0], 20.0)[few.species]  # (atoms, P, P//2+1)
    phase = np.exp(-2j * np.pi * (kx * r[:, 0, None, None] + ky * r[:, 1, None, None]))
    ref = (few.weight[:, None, None] * ff * phase).sum(0) * POTENTIAL_CONSTANT_V_A2 / apix**3
    ref = drop_nyquist(ref)
    got = proj.spectrum(rot)
    assert np.abs(got - ref).max() < 1e-7 * np.abs(ref).max()


def _analytic_projection(model, rotation, box, apix, bfactor, shift=(0.0, 0.0)):
    """Independent real-space projection: each atom's 3D Gaussians projected analytically to 2D
    Gaussians ``a (4 pi / b) exp(-4 pi^2 rho^2 / b)``, evaluated at pixel centres."""
    r = model.xyz_A @ rotation.T
    x = (np.arange(box) - box // 2) * apix
    img = np.zeros((box, box))
    for s in range(len(model.elements)):
        sel = model.species == s
        for a, b in zip(model.a[s], model.b[s], strict=True):
            bb = b + bfactor
            gx = np.exp(-4 * np.pi**2 * (x[None, :] - r[sel, 0, None] - shift[0]) ** 2 / bb)
            gy = np.exp(-4 * np.pi**2 * (x[None, :] - r[sel, 1, None] - shift[1]) ** 2 / bb)
            img += a * (4 * np.pi / bb) * np.einsum("ay,ax->yx", gy * model.weight[sel, None], gx)
    return img * POTENTIAL_CONSTANT_V_A2 / apix


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_matches_independent_real_space_projection(hsp90, seed):
    # A B-factor that makes the projection vanish beyond Nyquist: the band-limited sampled
    # image then equals the continuous projection at pixel centres (no interpolation anywhere).
    box, apix, bfac = 40, 4.0, 3000.0
    proj = AtomProjector(hsp90, box, apix, pad=2, bfactor_A2=bfac)
    rot = haar_rotations(np.random.default_rng(seed), 1)[0]
    shift = np.array([5.5, -3.25])
    img = render_clean(proj, rot, shift_A=shift)
    ref = _analytic_projection(hsp90, rot, box, apix, bfac, shift)
    assert np.abs(img - ref).max() < 1e-4 * np.abs(ref).max()


def test_projection_matches_gt_map_sums_for_axis_poses(hsp90):
    box, apix = 40, 4.0
    proj = AtomProjector(hsp90, box, apix, pad=1)
    vol = proj.ground_truth_map()
    c = box // 2
    tol = 1e-4 * np.abs(vol.sum(0)).max()
    # identity: the projection along z is the sum of the map over z
    assert np.abs(render_clean(proj, np.eye(3)) - vol.sum(0)).max() < tol
    # R maps map to image coordinates: x' = -y, y' = x, z' = z  =>  image[y', x'] = P[-x', y']
    rz = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    p = vol.sum(0)
    ref = np.zeros_like(p)
    ref[1:, 1:] = p[(2 * c - np.arange(1, box))[None, :], np.arange(1, box)[:, None]]
    assert np.abs(render_clean(proj, rz)[1:, 1:] - ref[1:, 1:]).max() < tol
    # x' = z, y' = y, z' = -x: projection along x  =>  image[y', x'] = sum_x V[z=x', y', x]
    ry = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    ref = vol.sum(2).T.T  # [z, y] -> image[y', x'] = S[z = x', y = y']
    assert np.abs(render_clean(proj, ry) - ref.T).max() < tol


def test_pad_changes_only_wraparound(hsp90):
    proj1 = AtomProjector(hsp90, 40, 4.0, pad=1, bfactor_A2=500.0)
    proj2 = AtomProjector(hsp90, 40, 4.0, pad=2, bfactor_A2=500.0)
    rot = haar_rotations(np.random.default_rng(5), 1)[0]
    a, b = render_clean(proj1, rot), render_clean(proj2, rot)
    assert np.abs(a - b).max() < 5e-3 * np.abs(a).max()


def test_map_projector_matches_atom_projector(hsp90):
    box, apix = 32, 6.0
    atoms = AtomProjector(hsp90, box, apix, pad=2)
    maps = MapProjector(atoms.ground_truth_map(), apix, pad=2)
    rot = haar_rotations(np.random.default_rng(2), 1)[0]
    sa, sm = atoms.spectrum(rot), maps.spectrum(rot)
    inside = (atoms.ky**2 + atoms.kx**2) < (0.45 / apix) ** 2
    err = np.abs(sa - sm)[inside].max() / np.abs(sa).max()
    assert err < 1e-2  # the map is the atoms' band-limited, periodised sampling


def test_resample_map_identity_and_round_trip(hsp90):
    vol = AtomProjector(hsp90, 32, 6.0, bfactor_A2=2000.0).ground_truth_map()
    np.testing.assert_array_equal(resample_map(vol, 6.0, 32, 6.0), vol)
    finer = resample_map(vol, 6.0, 48, 4.0)  # same field of view, finer pixels
    back = resample_map(finer, 4.0, 32, 6.0)
    assert np.abs(back - vol).max() < 1e-3 * np.abs(vol).max()
    direct = AtomProjector(hsp90, 48, 4.0, bfactor_A2=2000.0).ground_truth_map()
    assert np.abs(finer - direct).max() < 1e-2 * np.abs(direct).max()


# --------------------------------------------------------------------------------------------
# CTF
# --------------------------------------------------------------------------------------------


def test_ctf_matches_cryospin_core():
    from cryospin.core.ctf import compute_ctf_grid

    table = load_ctf_table("empiar10028").subset(np.array([0, 5000, 90000]))
    box, apix = 64, 2.0
    k = (np.arange(box) - box // 2) / (box * apix)
    for i in range(3):
        ours = evaluate_ctf(k[:, None], k[None, :], table, i)
        theirs = compute_ctf_grid(
            box,
            apix,
            *_ctf_row(table, i),
            dtype=torch.float64,
        ).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert evaluate_ctf(np.zeros(1), np.zeros(1), table, 0)[0] == pytest.approx(-0.1)


def test_power_spectra_show_their_rows_ctf(sim, hsp90):
    """Each clean image's power spectrum, divided by that of the same projection without CTF,
    follows CTF^2 of its own STAR row (and not that of rows with another defocus)."""
    from cryospin.io.star import read_star

    clean = _stack(sim.out / "particles_clean.mrcs")
    stack = read_star(sim.particles_star)
    apix = stack.pixel_size_A
    proj = AtomProjector(hsp90, BOX, apix, pad=2)
    k = np.fft.fftfreq(BOX, d=apix)
    ky, kx = k[:, None], k[None, :]
    s = np.sqrt(ky**2 + kx**2)
    band = (s > 0.02) & (s < 0.45 / apix)

    def z(a):
        return (a - a.mean(-1, keepdims=True)) / a.std(-1, keepdims=True)

    ctf2 = z(np.stack([evaluate_ctf(ky, kx, stack.ctf, j)[band] ** 2 for j in range(len(clean))]))
    mean_df = 0.5 * (stack.ctf.defocus_u_A + stack.ctf.defocus_v_A)
    for i in range(0, len(clean), 2):
        bare = render_clean(proj, stack.rotations[i], -stack.shifts_A[i])
        ps_bare = np.abs(np.fft.fft2(bare)) ** 2
        # regularised: a few pixels where the bare projection's spectrum vanishes would dominate
        ratio = np.abs(np.fft.fft2(clean[i])) ** 2 / (ps_bare + 0.01 * ps_bare[band].mean())
        corr = ctf2 @ z(ratio[band]) / band.sum()
        assert corr[i] > 0.8, f"image {i}: power spectrum does not follow its CTF ({corr[i]:.2f})"
        other = np.abs(mean_df - mean_df[i]) > 1500
        assert corr[i] > corr[other].max(), i


def test_noisy_power_spectrum_shows_thon_rings(tmp_path):
    """Averaged over images sharing one real CTF row, the noisy images' power spectrum is high
    where CTF^2 is high and down at the noise floor at the CTF zeros."""
    row = np.load(resources.files("cryospin.io.simulate") / "data" / "empiar10028_ctf.npz")["ctf"]
    np.savez(tmp_path / "one.npz", ctf=row[:1])
    res = simulate_dataset(
        SimulationConfig(
            preset="hsp90",
            box=48,
            n=96,
            snr=0.1,
            seed=5,
            ctf=str(tmp_path / "one.npz"),
            out=tmp_path / "o",
            write_cryodrgn=False,
        )
    )
    images = _stack(res.particles_mrcs)
    ps = (np.abs(np.fft.fft2(images)) ** 2).mean(0) / 48**2
    floor = np.load(res.ground_truth)["noise_var"].mean()
    apix = res.meta["pixel_size_A"]
    k = np.fft.fftfreq(48, d=apix)
    ky, kx = k[:, None], k[None, :]
    s = np.sqrt(ky**2 + kx**2)
    ctf2 = evaluate_ctf(ky, kx, load_ctf_table(tmp_path / "one.npz"), 0) ** 2
    band = (s > 0.03) & (s < 0.09)
    at_zeros = ps[band & (ctf2 < 0.03)].mean() / floor
    at_peaks = ps[band & (ctf2 > 0.9)].mean() / floor
    # ~100 pixels x 96 images per mean: standard error ~1 %
    assert abs(at_zeros - 1) < 0.05
    assert at_peaks > 1.1 and at_peaks - at_zeros > 0.1


# --------------------------------------------------------------------------------------------
# Noise, rotations, signal component
# --------------------------------------------------------------------------------------------


def test_noise_variance_matches_requested_snr(sim):
    images, clean = _stack(sim.particles_mrcs), _stack(sim.out / "particles_clean.mrcs")
    noise = images - clean
    sig_var = clean.reshape(len(clean), -1).var(1)
    noise_var = noise.reshape(len(noise), -1).var(1)
    expected = sig_var / 0.1
    ratio = noise_var / expected
    assert abs(ratio.mean() - 1) < 0.05
    assert np.all(np.abs(ratio - 1) < 0.15)  # per image: 2304 pixels, sd of the ratio ~3 %
    meta = json.loads(sim.meta_json.read_text())
    assert abs(meta["snr_measured"]["ratio_of_means"] - 0.1) < 0.005
    # white: flat power spectrum and no correlation with the signal
    ps = (np.abs(np.fft.fft2(noise)) ** 2).mean(0) / (BOX * BOX)
    assert abs(ps.mean() / noise_var.mean() - 1) < 0.02
    assert np.std(ps) / ps.mean() < 0.2
    corr = [np.corrcoef(c.ravel(), n.ravel())[0, 1] for c, n in zip(clean, noise, strict=True)]
    assert abs(np.mean(corr)) < 0.02


def test_rotations_are_haar_uniform():
    rot = haar_rotations(np.random.default_rng(11), 20000)
    np.testing.assert_allclose(
        rot @ rot.transpose(0, 2, 1), np.eye(3)[None].repeat(20000, 0), atol=1e-12
    )
    assert np.all(np.linalg.det(rot) > 0)
    # view directions uniform on the sphere: each coordinate uniform on [-1, 1]
    for j in range(3):
        assert stats.kstest(rot[:, 2, j], stats.uniform(-1, 2).cdf).pvalue > 0.001
    # rotation angle density (1 - cos t) / pi: CDF (t - sin t) / pi
    t = np.arccos(np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert stats.kstest(t, lambda x: (x - np.sin(x)) / np.pi).pvalue > 0.001
    # left-invariance: a fixed rotation applied leaves the angle distribution unchanged
    g = haar_rotations(np.random.default_rng(12), 1)[0]
    t2 = np.arccos(np.clip((np.trace(g @ rot, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert stats.kstest(t2, lambda x: (x - np.sin(x)) / np.pi).pvalue > 0.001


def test_stored_rotations_are_uniform(sim):
    from cryospin.io.star import read_star

    rot = read_star(sim.particles_star).rotations
    assert stats.kstest(rot[:, 2, 2], stats.uniform(-1, 2).cdf).pvalue > 0.001


def test_signal_component_is_projection_of_gt_map_at_stored_pose(sim):
    """Re-project gt_map.mrc (type-2 NUFFT of the map, a different path from the atoms') at the
    poses and origins read back from particles.star, with cryospin.core's CTF and phase shift:
    equals the clean image, and the noisy image regresses on it with slope 1."""
    from cryospin.core.ctf import compute_ctf
    from cryospin.io.mrc import read_map
    from cryospin.io.star import read_star

    stack = read_star(sim.particles_star)
    vol, apix = read_map(sim.gt_map)
    proj = MapProjector(vol, apix, pad=2)
    clean = _stack(sim.out / "particles_clean.mrcs")
    images = _stack(sim.particles_mrcs)
    p = proj.padded
    ky, kx = np.broadcast_arrays(proj.ky, proj.kx)
    freqs = torch.as_tensor(np.stack([kx, ky], -1))
    lowpass = (ky**2 + kx**2) < (0.4 / apix) ** 2
    idx = crop_indices(BOX, p)

    def lp(img):
        f = np.fft.rfft2(np.pad(img, ((0, p - BOX), (0, p - BOX)))) * lowpass
        return np.fft.irfft2(f, s=(p, p))[:BOX, :BOX]

    slopes = []
    for i in range(0, len(clean), 4):
        c = stack.ctf
        ctf = compute_ctf(
            freqs,
            *_ctf_row(c, i),
        ).numpy()
        t = -stack.shifts_A[i]  # content moves by -origin
        ramp = np.exp(-2j * np.pi * (kx * t[0] + ky * t[1]))
        spec = proj.spectrum(stack.rotations[i]) * ctf * ramp
        # default contrast "bright": the stack holds -CTF * projection (RELION convention)
        ref = -np.fft.irfft2(spec, s=(p, p))[np.ix_(idx, idx)]
        a, b = lp(ref), lp(clean[i])
        assert np.sqrt(((a - b) ** 2).mean() / (b**2).mean()) < 0.02, i
        slopes.append((images[i] * ref).sum() / (ref * ref).sum())
    assert abs(np.mean(slopes) - 1) < 0.1


def test_contrast_bright_by_default_and_matches_cryospin_io_default(sim, tmp_path):
    """Default: protein-bright stack (RELION convention); cryospin-io's default for .star
    (invert) then turns it into the core's forward model CTF * projection (protein dark)."""
    from cryospin.io.contrast import default_invert
    from cryospin.io.star import read_star

    clean = _stack(sim.out / "particles_clean.mrcs")
    # the mean of a clean image is -CTF(0) * projection mean = +w * mean > 0
    assert np.all(clean.mean(axis=(1, 2)) > 0)
    meta = json.loads(sim.meta_json.read_text())
    assert meta["contrast"] == "bright" and "bright" in meta["contrast_definition"]
    assert default_invert(read_star(sim.particles_star)) is True
    dark = simulate_dataset(
        SimulationConfig(
            preset="hsp90",
            box=24,
            n=4,
            seed=3,
            contrast="dark",
            out=tmp_path / "d",
            write_clean=True,
        )
    )
    assert np.all(_stack(dark.out / "particles_clean.mrcs").mean(axis=(1, 2)) < 0)


def test_no_ctf_is_written_as_minus_one(tmp_path):
    from cryospin.io.star import read_star

    res = simulate_dataset(
        SimulationConfig(preset="hsp90", box=24, n=3, seed=0, ctf=None, out=tmp_path / "n")
    )
    stack = read_star(res.particles_star)
    k = np.fft.fftfreq(24, d=stack.pixel_size_A)
    for i in range(3):
        np.testing.assert_array_equal(evaluate_ctf(k[:, None], k[None, :], stack.ctf, i), -1.0)


# --------------------------------------------------------------------------------------------
# Files, round trip, reproducibility, CLI
# --------------------------------------------------------------------------------------------


def test_round_trip_through_cryospin_io_is_exact(sim):
    from cryospin.io.cryodrgn import read_ctf_pkl, read_poses_pkl
    from cryospin.io.star import read_star

    gt = _gt(sim)
    stack = read_star(sim.particles_star)
    assert len(stack) == 64 and stack.box == BOX
    assert stack.pixel_size_A == pytest.approx(1.5 * 128 / BOX)
    np.testing.assert_array_equal(stack.rotations, gt["rotations"])
    np.testing.assert_array_equal(stack.shifts_A, gt["origins_A"])
    assert np.any(stack.shifts_A != 0)
    table = load_ctf_table("empiar10028").subset(gt["ctf_rows"])
    for f in CTF_FIELDS:
        np.testing.assert_array_equal(getattr(stack.ctf, f), getattr(table, f), err_msg=f)
    np.testing.assert_array_equal(stack.images.read(np.arange(64)), _stack(sim.particles_mrcs))
    np.testing.assert_array_equal(stack.half_set, gt["half_set"])
    ctf, d, apix = read_ctf_pkl(sim.out / "ctf.pkl")
    assert d == BOX and apix == pytest.approx(stack.pixel_size_A)
    np.testing.assert_allclose(ctf.defocus_u_A, table.defocus_u_A, rtol=1e-6)
    rot, shifts = read_poses_pkl(sim.out / "poses.pkl", BOX, stack.pixel_size_A)
    np.testing.assert_allclose(rot, gt["rotations"], atol=1e-6)
    np.testing.assert_allclose(shifts, gt["origins_A"], atol=1e-4)


def test_outputs_and_meta(sim):
    meta = json.loads(sim.meta_json.read_text())
    for name in ("particles.mrcs", "particles.star", "gt_map.mrc", "meta.json"):
        assert (sim.out / name).is_file() and name in meta["outputs"]
    assert meta["settings"]["seed"] == 3 and meta["settings"]["snr"] == 0.1
    assert "var(clean" in meta["snr_definition"]
    assert meta["versions"]["gemmi"] and meta["ground_truth"]["n_atoms"] == 11906
    text = sim.particles_star.read_text()
    assert "data_optics" in text and "_rlnOriginXAngst" in text and "_rlnImagePixelSize" in text
    with mrcfile.open(sim.gt_map) as m:
        assert m.data.shape == (BOX, BOX, BOX)
        assert float(m.voxel_size.x) == pytest.approx(4.0)
        # centre of mass at the centre voxel L // 2
        v = np.clip(np.asarray(m.data, dtype=np.float64), 0, None)
        g = np.arange(BOX) - BOX // 2
        com = [
            (v.sum(axis=tuple(a for a in range(3) if a != ax)) * g).sum() / v.sum()
            for ax in range(3)
        ]
        assert np.all(np.abs(com) < 0.5)


def test_seed_reproducible_bit_for_bit(tmp_path, monkeypatch):
    from cryospin.io.simulate import simulator

    monkeypatch.setattr(simulator, "BLOCK", 8)  # several noise blocks, shared by 2 workers
    kw = dict(preset="hsp90", box=24, n=40, snr=0.1, seed=9, shift_max=4.0)
    a = simulate_dataset(SimulationConfig(**kw, out=tmp_path / "a"))
    b = simulate_dataset(SimulationConfig(**kw, out=tmp_path / "b", workers=2))
    c = simulate_dataset(SimulationConfig(**{**kw, "seed": 10}, out=tmp_path / "c"))
    assert a.particles_mrcs.read_bytes() == b.particles_mrcs.read_bytes()
    body = [r.particles_star.read_text().split("\n")[3:] for r in (a, b)]
    assert body[0] == body[1]
    assert a.particles_mrcs.read_bytes() != c.particles_mrcs.read_bytes()


def test_rotations_from_file_ctf_ranges_and_model_file(tmp_path, hsp90):
    rot = haar_rotations(np.random.default_rng(4), 10)
    np.save(tmp_path / "rot.npy", rot)
    res = simulate_dataset(
        SimulationConfig(
            model=bundled_model_path("2cg9"),
            pixel_size=6.0,
            box=32,
            n=10,
            snr=1.0,
            seed=1,
            rotations=tmp_path / "rot.npy",
            ctf="ranges",
            defocus_range=(15000, 20000),
            out=tmp_path / "o",
        )
    )
    from cryospin.io.star import read_star

    stack = read_star(res.particles_star)
    np.testing.assert_allclose(stack.rotations, rot, atol=1e-8)
    mean_df = 0.5 * (stack.ctf.defocus_u_A + stack.ctf.defocus_v_A)
    assert np.all((mean_df >= 15000) & (mean_df <= 20000))
    assert np.all(stack.ctf.cs_mm == 2.7)


def test_map_input(tmp_path, shared_data):
    res = simulate_dataset(
        SimulationConfig(
            map=shared_data / "real-stacks" / "trpv1" / "trpv1_volume.mrc",
            box=48,
            n=6,
            snr=0.1,
            seed=0,
            out=tmp_path / "m",
            write_clean=True,
        )
    )
    meta = json.loads(res.meta_json.read_text())
    assert meta["ground_truth"]["source"] == "map"
    assert meta["pixel_size_A"] == pytest.approx(4.88, rel=1e-3)
    assert np.all(np.isfinite(_stack(res.particles_mrcs)))


def test_preset_pixel_size_and_spike_fits():
    from cryospin.io.simulate import preset_pixel_size

    assert preset_pixel_size("hsp90", 128) == pytest.approx(1.5)
    assert preset_pixel_size("spike", 128) == pytest.approx(2.13)
    assert preset_pixel_size("hsp90", 64) == pytest.approx(3.0)
    spike = load_atom_model(bundled_model_path("6vyb"))
    assert spike.max_radius_A < 0.5 * 128 * 2.13


def test_config_errors():
    with pytest.raises(ValueError):
        SimulationConfig(box=32, n=4)  # no ground truth
    with pytest.raises(ValueError):
        SimulationConfig(preset="hsp90", box=33, n=4)
    with pytest.raises(ValueError):
        SimulationConfig(preset="hsp90", model=Path("x.pdb"), box=32, n=4)


def test_cli(tmp_path):
    from click.testing import CliRunner

    from cryospin.core.cli.main import build_cli

    out = tmp_path / "cli"
    r = CliRunner().invoke(
        build_cli(),
        [
            "simulate",
            "--preset",
            "spike",
            "--box",
            "32",
            "--n",
            "8",
            "--snr",
            "0.1",
            "--shift-sigma",
            "2",
            "--seed",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "measured SNR" in r.output
    for name in ("particles.mrcs", "particles.star", "gt_map.mrc", "meta.json"):
        assert (out / name).is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["preset"] == "spike" and meta["settings"]["shift_sigma"] == 2.0


def test_matches_cryospin_core_forward_model(sim):
    """Cross-check with the reconstructor's own forward model, read the way the engine reads the
    stack (cryospin-io defaults: .star inverted): phase_shift(CTF * slice(gt_map, R), -origin).
    Its trilinear slicing (2x oversampled) is approximate, hence a correlation threshold; a wrong
    pose, shift or contrast convention gives a correlation near 0 or negative."""
    from cryospin.core.ctf import ctf_from_params
    from cryospin.core.fourier import fft3_centered, ifft2_centered
    from cryospin.core.slicing import extract_central_slices, phase_shift
    from cryospin.io.contrast import default_invert
    from cryospin.io.mrc import read_map
    from cryospin.io.star import read_star

    stack = read_star(sim.particles_star)
    sign = -1.0 if default_invert(stack) else 1.0
    vol, apix = read_map(sim.gt_map)
    padded = np.zeros((2 * BOX,) * 3)
    padded[BOX // 2 : BOX // 2 + BOX, BOX // 2 : BOX // 2 + BOX, BOX // 2 : BOX // 2 + BOX] = vol
    vft = fft3_centered(torch.as_tensor(padded))
    idx = np.arange(0, len(stack), 3)
    rots = torch.as_tensor(stack.rotations[idx])
    slices = extract_central_slices(vft, rots, out_box=BOX, oversampling=2.0)
    ctf = ctf_from_params(stack.ctf.subset(idx), BOX, apix, dtype=torch.float64)
    shifts_px = torch.as_tensor(-stack.shifts_A[idx] / apix)
    model = ifft2_centered(phase_shift(ctf * slices, shifts_px)).real.numpy()
    observed = sign * _stack(sim.out / "particles_clean.mrcs")[idx]
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(model, observed, strict=True)]
    assert min(corr) > 0.97, corr
