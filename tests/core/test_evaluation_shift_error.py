"""Tests of cryospin.core.evaluation.shift_error: particle shifts under a map's 3D translation.

The re-expression ``s' = s - (A' t)_xy`` is checked against an independent image model: exact
Fourier slices (a direct float64 DFT at the rotated frequencies) of a map rotated analytically and
translated by ``scipy.ndimage.shift``, with the content shift applied as an explicit phase ramp.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryospin.core.engine.report import epoch_metrics, truth_pose_metrics
from cryospin.core.engine.results import EpochState, Truth
from cryospin.core.evaluation.align_maps import align_maps, rotate_map
from cryospin.core.evaluation.fsc_eval import fsc_curves
from cryospin.core.evaluation.map_ops import real_space_correlation, translation_search
from cryospin.core.evaluation.phantoms import blob_map
from cryospin.core.evaluation.pose_error import FLIP, apply_pose_alignment, flip_hand_poses
from cryospin.core.evaluation.shift_error import align_shifts, shift_error
from cryospin.core.fsc import resolution_at_threshold

CENTRES = np.array([[3.0, -2.0, 3.0], [-4.0, 1.0, -1.0], [1.0, 4.0, -3.0], [-2.0, -3.0, 2.0]])


def _gaussians(box: int, centres: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Sum of isotropic Gaussians (weights 1..k) at ``centres`` (x, y, z), ``[z, y, x]`` float64."""
    r = np.arange(box) - box // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    vol = np.zeros((box, box, box))
    for w, c in enumerate(centres, start=1):
        vol += w * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * sigma**2))
    return vol


def _image_ft(vol: np.ndarray, pose: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Exact centred 2D transform of the projection of ``vol`` at ``pose``, content moved by
    ``shift`` (pixels): ``sum_x V(x) exp(-2 pi i (k @ A) . x / D) * exp(-2 pi i k . s / L)``."""
    d = vol.shape[0]
    r = np.arange(d) - d // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    keep = np.abs(vol) > 1e-10 * np.abs(vol).max()
    pts = np.stack([x[keep], y[keep], z[keep]], -1).astype(np.float64)
    ky, kx = np.meshgrid(r, r, indexing="ij")
    k2 = np.stack([kx, ky], -1).reshape(-1, 2).astype(np.float64)
    q = k2 @ pose[:2, :]  # row form of A^T (kx, ky, 0)
    ft = np.exp(-2j * np.pi * (q @ pts.T) / d) @ vol[keep]
    ft *= np.exp(-2j * np.pi * (k2 @ shift) / d)
    return ft.reshape(d, d)


@pytest.mark.parametrize(("flipped", "box"), [(False, 24), (True, 24), (True, 25)])
def test_realigned_shifts_reproduce_images_of_the_moved_map(flipped: bool, box: int) -> None:
    rot = Rotation.from_euler("zyz", [40, 65, -20], degrees=True).as_matrix()
    t = np.array([1.7, -2.4, 0.9])  # voxels (x, y, z)
    est_map = _gaussians(box, CENTRES)
    # reference map V_ref(x) = V'(R^T (x - t)), V' = mirror of est_map when flipped: the
    # rotation moves the Gaussians' centres (exact), scipy translates the sampled map
    moved_centres = CENTRES @ (FLIP if flipped else np.eye(3)) @ rot.T
    ref_map = ndimage.shift(_gaussians(box, moved_centres), t[::-1], order=5, mode="constant")

    poses = Rotation.random(5, random_state=3).as_matrix()
    shifts = np.random.default_rng(4).uniform(-3, 3, size=(5, 2))
    aligned = apply_pose_alignment(poses, rot, flipped)
    new_shifts = align_shifts(shifts, aligned, t)
    old_shifts = shifts  # rotations re-expressed, shifts not: the gap this module closes
    wrong_sign = shifts + aligned[:, :2, :] @ t
    moves = np.linalg.norm(aligned[:, :2, :] @ t, axis=-1)
    assert (moves > 1.0).sum() >= 3  # the translation moves most images by over a pixel
    for i in range(5):
        image = _image_ft(est_map, poses[i], shifts[i])
        scale = np.abs(image).max()
        same = _image_ft(ref_map, aligned[i], new_shifts[i])
        assert np.abs(same - image).max() < 2e-3 * scale
        if moves[i] > 1.0:
            for bad in (old_shifts[i], wrong_sign[i]):
                assert np.abs(_image_ft(ref_map, aligned[i], bad) - image).max() > 0.1 * scale


def test_align_maps_translation_recovers_true_shifts() -> None:
    # est map = truth rotated by S (after the mirror) and translated by t0; particles imaged from
    # the truth at (A_i, s_i) are then posed against the estimate at B_i = H(A_i) S^T with shifts
    # s_i - (B_i t0)_xy. align_maps' (R, t) must map both back to the truth.
    apix = 2.0
    truth = blob_map(32, seed=7)
    s_rot = Rotation.random(random_state=8).as_matrix()
    t0 = np.array([2.5, -1.5, 3.0])
    est_map = rotate_map(truth, s_rot, t0, flip=True)
    true_poses = Rotation.random(300, random_state=9).as_matrix()
    true_shifts = np.random.default_rng(10).uniform(-4, 4, size=(300, 2)) * apix
    est_poses = flip_hand_poses(true_poses) @ s_rot.T
    est_shifts = align_shifts(true_shifts, est_poses, t0 * apix)

    _, info = align_maps(truth, est_map, apix)
    assert info.flipped
    aligned = apply_pose_alignment(est_poses, info.rotation, info.flipped)
    back = align_shifts(est_shifts, aligned, info.shift_A)
    assert np.median(np.linalg.norm(back - true_shifts, axis=-1)) < 0.5 * apix
    res = shift_error(est_shifts, true_shifts, aligned)
    np.testing.assert_allclose(res.translation, info.shift_A, atol=0.5 * apix)
    assert res.median < 0.3 * apix
    # without the translation the shifts are off by |(A' t)_xy|, several pixels
    assert np.median(np.linalg.norm(est_shifts - true_shifts, axis=-1)) > 2 * apix


def test_shift_error_best_translation_and_outliers() -> None:
    rng = np.random.default_rng(11)
    n = 400
    aligned = Rotation.random(n, random_state=12).as_matrix()
    true_shifts = rng.uniform(-5, 5, size=(n, 2))
    t = np.array([1.2, -3.4, 2.2])
    est = true_shifts + aligned[:, :2, :] @ t + rng.normal(scale=0.1, size=(n, 2))
    est[:80] += rng.uniform(-15, 15, size=(80, 2))  # 20 % outliers
    res = shift_error(est, true_shifts, aligned)
    np.testing.assert_allclose(res.translation, t, atol=0.05)
    assert res.median < 0.2 and res.errors[80:].max() < 0.6
    np.testing.assert_allclose(
        res.errors,
        np.linalg.norm(align_shifts(est, aligned, res.translation) - true_shifts, axis=-1),
    )
    s = res.summary()
    assert set(s) == {"shift_error_median_A", "shift_error_mean_A", "global_shift_A"}
    with pytest.raises(ValueError, match="true shifts"):
        shift_error(est, true_shifts[:, :1], aligned)
    with pytest.raises(ValueError, match="rotations"):
        shift_error(est, true_shifts, aligned[:5])
    with pytest.raises(ValueError, match="translation"):
        align_shifts(est, aligned, t[:2])


@pytest.mark.parametrize("box", [24, 25])
def test_translation_search_recovers_subvoxel_shift(box: int) -> None:
    vol = _gaussians(box, CENTRES * 0.6)
    for t in (np.array([1.3, -2.6, 0.4]), np.array([-3.0, 0.0, 2.5])):
        ref = ndimage.shift(vol, t[::-1], order=5, mode="constant")  # ref(x) = vol(x - t)
        np.testing.assert_allclose(translation_search(ref, vol), t, atol=0.1)
        found = translation_search(ref, vol)
        assert real_space_correlation(rotate_map(vol, np.eye(3), found), ref) > 0.998
    # the integer FFT peak alone: the nearest integer shift (no component within 0.4 of a half)
    t = np.array([1.3, -2.4, 0.2])
    ref = ndimage.shift(vol, t[::-1], order=5, mode="constant")
    np.testing.assert_array_equal(translation_search(ref, vol, subvoxel=False), np.round(t))


def test_truth_pose_metrics_reports_shift_errors() -> None:
    true = Rotation.random(200, random_state=13).as_matrix()
    g = Rotation.random(random_state=14).as_matrix()
    est = true @ g  # a global rotation of the frame: aligned poses = est @ g^T = true
    true_shifts = np.random.default_rng(15).uniform(-6, 6, size=(200, 2))
    t = np.array([3.0, 1.0, -2.0])  # Å
    est_shifts = true_shifts + true[:, :2, :] @ t
    out = truth_pose_metrics(est, est_shifts, true, true_shifts, None, None)
    assert out["rotation_error_median_deg"] < 1e-6 and out["rotation_error_sym_median_deg"] < 1e-6
    assert out["shift_error_median_A"] < 1e-6
    np.testing.assert_allclose(out["global_shift_A"], t, atol=1e-6)
    assert "shift_error_median_A" not in truth_pose_metrics(est, None, true, None, None, None)


def test_epoch_metrics_aligns_an_off_centre_map() -> None:
    # poses fix the rotation; the translation search must lay the shifted map onto the truth
    box, apix = 32, 3.0
    truth = _gaussians(box, CENTRES).astype(np.float32)
    true = Rotation.random(100, random_state=16).as_matrix()

    def resolution(shift: np.ndarray) -> tuple[float, float]:
        vol = ndimage.shift(truth.astype(np.float64), shift[::-1], order=5, mode="constant")
        state = EpochState(
            epoch=0,
            indices=np.arange(100),
            rotations=true,
            shifts_px=None,
            pixel_size_A=apix,
            volume=lambda: torch.as_tensor(vol),
            with_map=True,
        )
        unaligned = fsc_curves(vol, truth, apix)[1]
        return (
            epoch_metrics(state, Truth(truth, true, None))["resolution_vs_truth_A"],
            resolution_at_threshold(torch.as_tensor(unaligned), box, apix, 0.5),
        )

    centred, _ = resolution(np.zeros(3))
    shifted, without_translation = resolution(np.array([2.0, -3.0, 1.0]))
    assert centred <= 2.1 * apix and shifted <= 1.05 * centred
    assert without_translation > 2 * shifted  # the test can tell
