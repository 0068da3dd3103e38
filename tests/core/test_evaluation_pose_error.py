"""Tests of cryospin.core.evaluation.pose_error: global rotation and hand, and the mirror identity.

The hand-flip identity (a map mirrored ``z -> -z`` projects at pose ``F A F`` exactly as the
original projects at ``A``) is checked twice, independently: by real-space line integrals and by
central slices of the 3D Fourier transform (cryospin.core.slicing).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.evaluation.align_maps import align_maps, flip_hand, rotate_map
from cryospin.core.evaluation.phantoms import blob_map
from cryospin.core.evaluation.pose_error import (
    FLIP,
    apply_pose_alignment,
    flip_hand_poses,
    geodesic_deg,
    rotation_error,
    symmetric_pose_errors,
    viewing_directions,
)
from cryospin.core.fourier import fft3_centered
from cryospin.core.slicing import extract_central_slices


def _project(vol: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Real-space projection ``I(u, v) = sum_w V(A^T (u, v, w))`` (trilinear), ``[y, x]``."""
    return rotate_map(vol.astype(np.float64), pose).sum(axis=0)


def _random(n: int, seed: int) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_matrix()


def _noisy(r: np.ndarray, sigma_deg: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = Rotation.from_rotvec(rng.normal(size=(len(r), 3)) * np.radians(sigma_deg)).as_matrix()
    return r @ noise


# --------------------------------------------------------------------------------------------
# The mirror identity for poses
# --------------------------------------------------------------------------------------------


def _compact_blobs(box: int, seed: int) -> np.ndarray:
    """Blob map zeroed outside a sphere of radius ``box / 2 - 2``: an even box's unpaired border
    plane (index 0, which the mirror maps onto itself) then holds no density."""
    vol = blob_map(box, seed=seed).astype(np.float64)
    r = np.arange(box) - box // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    return vol * (x * x + y * y + z * z <= (box / 2 - 2) ** 2)


@pytest.mark.parametrize("box", [32, 33])
def test_flipped_map_projects_at_conjugated_poses_real_space(box: int) -> None:
    vol = _compact_blobs(box, seed=1)
    mirrored = flip_hand(vol)
    for pose in _random(4, seed=2):
        ref = _project(vol, pose)
        same = _project(mirrored, flip_hand_poses(pose))
        np.testing.assert_allclose(same, ref, atol=1e-12 * np.abs(ref).max())
        # The unconjugated pose gives a different image (the map has no mirror symmetry).
        other = _project(mirrored, pose)
        assert np.abs(other - ref).max() > 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("box", [32, 33])
def test_flipped_map_projects_at_conjugated_poses_fourier_slices(box: int) -> None:
    vol = torch.as_tensor(_compact_blobs(box, seed=3))
    mirrored = torch.as_tensor(flip_hand(vol.numpy()).copy())
    poses = torch.as_tensor(_random(5, seed=4))
    conj = torch.as_tensor(flip_hand_poses(poses))
    # Compare inside the circle |k| < D/2 - 1: an even box's kz = -D/2 Nyquist plane has no
    # +D/2 partner, so only samples that reach it may differ.
    k = torch.arange(box) - box // 2
    inside = (k[:, None] ** 2 + k[None, :] ** 2) < (box / 2 - 1) ** 2
    s_ref = extract_central_slices(fft3_centered(vol), poses) * inside
    s_mir = extract_central_slices(fft3_centered(mirrored), conj) * inside
    scale = float(s_ref.abs().max())
    assert float((s_mir - s_ref).abs().max()) < 1e-12 * scale
    s_bad = extract_central_slices(fft3_centered(mirrored), poses) * inside
    assert float((s_bad - s_ref).abs().max()) > 0.05 * scale


def test_rotated_map_projects_at_right_multiplied_poses() -> None:
    # V'(x) = V(G x) = rotate_map(V, G^T) projects at A G as V projects at A.
    vol = blob_map(40, seed=5).astype(np.float64)
    g = _random(1, seed=6)[0]
    rotated = rotate_map(vol, g.T)
    for pose in _random(3, seed=7):
        ref = _project(vol, pose)
        out = _project(rotated, pose @ g)
        # equal up to the blur of resampling twice; the other composition order is far off
        assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
        assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.999
        wrong = _project(rotated, g @ pose)
        assert np.corrcoef(wrong.ravel(), ref.ravel())[0, 1] < 0.9


def test_flip_hand_poses_is_proper_involution() -> None:
    r = _random(10, seed=8)
    f = flip_hand_poses(r)
    np.testing.assert_allclose(np.linalg.det(f), 1.0, atol=1e-12)
    np.testing.assert_allclose(flip_hand_poses(f), r, atol=1e-12)
    np.testing.assert_allclose(f, FLIP @ r @ FLIP)


def test_viewing_direction_is_third_row() -> None:
    # A^T e_z: the map-frame direction that the pose sends to the image's projection axis.
    r = _random(6, seed=9)
    v = viewing_directions(r)
    np.testing.assert_allclose(
        np.einsum("nij,nj->ni", r, v), np.tile([0, 0, 1.0], (6, 1)), atol=1e-12
    )


# --------------------------------------------------------------------------------------------
# rotation_error
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flipped", [False, True])
def test_recovers_global_rotation_and_hand(flipped: bool) -> None:
    n, sigma = 3000, 2.0
    true = _random(n, seed=10)
    rot = _random(1, seed=11)[0]
    # aligned = H(est) R^T = true  <=>  est = H(true R); then add noise.
    est = true @ rot
    if flipped:
        est = flip_hand_poses(est)
    est = _noisy(est, sigma, seed=12)
    res = rotation_error(est, true)
    assert res.flipped is flipped
    assert geodesic_deg(res.rotation, rot) < 0.5
    # isotropic Gaussian axis-angle noise of sigma per axis: median angle ~ 1.54 sigma
    assert 1.2 * sigma < res.median_deg < 1.9 * sigma
    assert res.errors_deg.shape == (n,)
    assert res.viewdir_errors_deg.shape == (n,)
    assert res.mean_deg == pytest.approx(float(res.errors_deg.mean()))
    np.testing.assert_allclose(res.aligned, apply_pose_alignment(est, res.rotation, res.flipped))


def test_errors_exact_without_noise_and_torch_input() -> None:
    true = _random(500, seed=13)
    est = flip_hand_poses(true @ _random(1, seed=14)[0])
    res = rotation_error(torch.as_tensor(est), torch.as_tensor(true))
    assert res.flipped
    assert res.median_deg < 1e-5 and res.errors_deg.max() < 1e-5
    assert res.viewdir_errors_deg.max() < 1e-3


@pytest.mark.parametrize("mirror", [False, True])
def test_errors_invariant_to_global_rotation_of_estimates(mirror: bool) -> None:
    true = _random(2000, seed=15)
    est = _noisy(true, 5.0, seed=16)
    base = rotation_error(est, true)
    g = _random(1, seed=17)[0]
    moved = est @ g  # the same reconstruction in another frame
    if mirror:
        moved = flip_hand_poses(moved)
    res = rotation_error(moved, true)
    assert res.flipped is (base.flipped ^ mirror)
    np.testing.assert_allclose(res.errors_deg, base.errors_deg, atol=1e-6)
    assert res.median_deg == pytest.approx(base.median_deg, abs=1e-6)


def test_robust_to_outliers() -> None:
    n = 2000
    true = _random(n, seed=18)
    rot = _random(1, seed=19)[0]
    est = _noisy(true @ rot, 1.0, seed=20)
    bad = np.random.default_rng(21).random(n) < 0.3
    est[bad] = _random(int(bad.sum()), seed=22)
    res = rotation_error(est, true)
    assert not res.flipped
    assert geodesic_deg(res.rotation, rot) < 0.5
    assert np.median(res.errors_deg[~bad]) < 2.5
    assert np.median(res.errors_deg[bad]) > 60


def test_hands_option_and_errors() -> None:
    true = _random(100, seed=23)
    est = flip_hand_poses(true)
    assert rotation_error(est, true, hands="same").median_deg > 10
    assert rotation_error(est, true, hands="flipped").median_deg < 1e-6
    with pytest.raises(ValueError, match="hands"):
        rotation_error(est, true, hands="left")
    with pytest.raises(ValueError, match="shape"):
        rotation_error(est[:5], true)
    s = rotation_error(est, true).summary()
    assert s["flipped"] is True and len(s["global_rotation"]) == 3


@pytest.mark.parametrize("flipped", [True])
def test_pose_alignment_matches_map_alignment(flipped: bool) -> None:
    # A map rotated by S (after a mirror when flipped) has poses H(A) S^T; rotation_error and
    # align_maps must then report the same (rotation, flipped).
    true_map = blob_map(32, seed=24)
    s = _random(1, seed=25)[0]
    est_map = rotate_map(true_map, s, flip=flipped)
    true_poses = _random(400, seed=26)
    est_poses = (flip_hand_poses(true_poses) if flipped else true_poses) @ s.T
    res = rotation_error(est_poses, true_poses)
    _, info = align_maps(true_map, est_map, 3.0)
    assert res.flipped is flipped and info.flipped is flipped
    assert res.median_deg < 1e-5
    assert geodesic_deg(res.rotation, info.rotation) < 1.5


# --------------------------------------------------------------------------------------------
# Errors modulo a symmetry of the truth map
# --------------------------------------------------------------------------------------------


def _c2_map(box: int) -> np.ndarray:
    """Two Gaussian blobs and their mates under 180 degrees about z (a C2 map)."""
    r = np.arange(box) - box // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    vol = np.zeros((box, box, box))
    for px, py, pz in [(4.0, 1.0, 3.0), (-2.0, 5.0, -4.0)]:
        for sx, sy in [(1, 1), (-1, -1)]:
            vol += np.exp(-((x - sx * px) ** 2 + (y - sy * py) ** 2 + (z - pz) ** 2) / 4.0)
    return vol


@pytest.mark.parametrize("flipped", [False, True])
def test_symmetric_pose_errors_resolve_a_c2_truth(flipped: bool) -> None:
    s_rot = np.diag([-1.0, -1.0, 1.0])  # 180 degrees about z
    true = _random(200, seed=30)
    g = _random(1, seed=31)[0]
    # estimates: a global rotation (and mirror) of the frame, half the particles on the mate
    branch = true.copy()
    branch[::2] = true[::2] @ s_rot
    est = (flip_hand_poses(branch) if flipped else branch) @ g
    assert rotation_error(est, true).median_deg > 45  # the plain error mixes the branches
    out = symmetric_pose_errors(est, true, _c2_map(24), None)
    assert out["symmetry_deg"] == pytest.approx(180.0, abs=1.0)
    assert out["symmetry_correlation"] > 0.99
    assert out["rotation_error_sym_median_deg"] < 0.5
    assert out["rotation_error_sym_mean_deg"] < 0.5
    # the total alignment maps every estimate onto its true pose or its mate
    a = out["sym_alignment"]
    assert a["flipped"] is flipped
    aligned = apply_pose_alignment(est, np.asarray(a["rotation"]), a["flipped"])
    assert geodesic_deg(aligned, branch).max() < 0.5
    # an asymmetric truth does not accept the candidate symmetry
    out = symmetric_pose_errors(est, true, blob_map(24, seed=32), None)
    assert out["symmetry_deg"] is None and out["rotation_error_sym_median_deg"] > 45
    with pytest.raises(ValueError, match="shapes differ"):
        symmetric_pose_errors(est[:5], true, None, None)


def test_symmetry_is_judged_at_a_fixed_coarse_sampling() -> None:
    """Asymmetric detail finer than the 32-voxel sampling does not hide a low-resolution C2."""
    from cryospin.core.evaluation.map_ops import real_space_correlation
    from cryospin.core.evaluation.point_group import detect_point_group

    box = 64
    s_true = np.diag([-1.0, -1.0, 1.0])
    vol = 3 * _c2_map(box)
    rng = np.random.default_rng(34)
    spec = np.fft.fftshift(np.fft.fftn(rng.standard_normal((box,) * 3)))
    k = np.arange(box) - box // 2
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    spec[np.sqrt(kx**2 + ky**2 + kz**2) < 20] = 0  # only beyond the 32-voxel Nyquist (16)
    detail = np.real(np.fft.ifftn(np.fft.ifftshift(spec)))
    vol = vol + 0.5 * detail / detail.std() * vol.std()
    assert real_space_correlation(vol, rotate_map(vol, s_true)) < 0.9  # full sampling
    group = detect_point_group(vol)
    assert group.name == "C2" and group.correlation > 0.95
    assert np.degrees(Rotation.from_matrix(group.operators[1].T @ s_true).magnitude()) < 1.0
