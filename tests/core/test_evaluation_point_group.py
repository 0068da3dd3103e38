"""Point-group detection of truth maps and rotation errors modulo the group.

Volumes are sums of Gaussians placed at the orbit ``{g p}`` of a few random points under an exact
group ``G`` whose axes are tilted at random, so ``V(g x) = V(x)`` holds analytically.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.evaluation.point_group import (
    PointGroup,
    cyclic_group,
    detect_point_group,
    detect_point_group_cached,
    dihedral_group,
    pose_errors_modulo_group,
)
from cryospin.core.evaluation.pose_error import (
    flip_hand_poses,
    geodesic_deg,
    rotation_error,
    symmetric_pose_errors,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from run_toy_data import project  # noqa: E402

FRAME = Rotation.random(random_state=7).as_matrix()  # tilts the groups' axes
AXIS, TWO_FOLD = FRAME[:, 2], FRAME[:, 0]


def _orbit_map(ops: np.ndarray, box: int = 32, n_points: int = 4, seed: int = 0) -> np.ndarray:
    """Return ``sum_g sum_j w_j exp(-|x - g p_j|^2 / (2 s_j^2))``, invariant under ``ops``."""
    rng = np.random.default_rng(seed)
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((box, box, box))
    for _ in range(n_points):
        p = rng.uniform(-1, 1, 3) * box * 0.22
        s = box * rng.uniform(0.035, 0.06)
        w = rng.uniform(0.5, 1.5)
        for g in ops:
            q = g @ p
            vol += w * np.exp(-((x - q[0]) ** 2 + (y - q[1]) ** 2 + (z - q[2]) ** 2) / (2 * s * s))
    return vol


def _same_set(found: np.ndarray, expected: np.ndarray, tol_deg: float) -> bool:
    """Every element of each set lies within ``tol_deg`` of an element of the other."""
    d = geodesic_deg(found[:, None], expected[None, :])
    return bool(d.min(axis=1).max() < tol_deg and d.min(axis=0).max() < tol_deg)


GROUPS = {
    "C1": np.eye(3)[None],
    "C3": cyclic_group(AXIS, 3),
    "D2": dihedral_group(AXIS, 2, TWO_FOLD),
    "D7": dihedral_group(AXIS, 7, TWO_FOLD),
}


@pytest.mark.parametrize("name", list(GROUPS))
def test_detects_the_exact_group_of_a_symmetric_volume(name: str) -> None:
    ops = GROUPS[name]
    group = detect_point_group(_orbit_map(ops, seed=len(name) + ops.shape[0]), 3.0)
    assert group.name == name and group.order == ops.shape[0]
    assert _same_set(group.operators, ops, tol_deg=1.5)
    # a finite group: closed under products and inverses (within the axis estimate's error)
    products = np.einsum("aij,bjk->abik", group.operators, group.operators).reshape(-1, 3, 3)
    assert _same_set(products, group.operators, tol_deg=1e-6)
    assert _same_set(np.swapaxes(group.operators, -1, -2), group.operators, tol_deg=1e-6)
    if name != "C1":
        assert group.correlation > 0.98


def test_dihedral_group_is_closed_and_its_two_folds_are_perpendicular() -> None:
    ops = dihedral_group(AXIS, 5, TWO_FOLD + 0.3 * AXIS)  # 2-fold given off-perpendicular
    assert ops.shape == (10, 3, 3)
    products = np.einsum("aij,bjk->abik", ops, ops).reshape(-1, 3, 3)
    assert _same_set(products, ops, tol_deg=1e-6)
    angles = np.degrees(np.arccos(np.clip((np.trace(ops, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.sum(np.isclose(angles, 180.0)) == 5  # five 2-folds (D5, odd n: no 2-fold on AXIS)
    for g in ops[5:]:
        w, v = np.linalg.eigh(g + g.T)  # the 2-fold axis: eigenvector of eigenvalue 2
        assert abs(v[:, -1] @ AXIS) < 1e-9
    with pytest.raises(ValueError, match="parallel"):
        dihedral_group(AXIS, 3, AXIS)


def test_the_group_acts_on_the_right_of_relion_poses() -> None:
    """A C3 map gives the same image at ``A`` and ``A g`` (not at ``g A``)."""
    ops = GROUPS["C3"]
    vol = torch.as_tensor(_orbit_map(ops, box=24, seed=3))
    group = detect_point_group(vol.numpy())
    a = Rotation.random(4, random_state=11).as_matrix()
    g = group.operators[1]
    img = project(vol, torch.as_tensor(a))
    right = project(vol, torch.as_tensor(a @ g))
    left = project(vol, torch.as_tensor(g @ a))
    scale = float(img.abs().max())
    assert float((img - right).abs().max()) < 0.02 * scale
    assert float((img - left).abs().max()) > 0.2 * scale


def test_pose_errors_modulo_group_are_the_distance_to_the_nearest_mate() -> None:
    ops = GROUPS["D7"]
    true = Rotation.random(300, random_state=1).as_matrix()
    rng = np.random.default_rng(2)
    mates = ops[rng.integers(0, len(ops), 300)]
    theta = rng.uniform(0.0, 10.0, 300)  # degrees, under half the smallest mate spacing
    u = rng.standard_normal((300, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    tilt = Rotation.from_rotvec(np.radians(theta)[:, None] * u).as_matrix()
    est = true @ mates @ tilt
    err = pose_errors_modulo_group(est, true, PointGroup("D7", ops))
    np.testing.assert_allclose(err, theta, atol=1e-6)
    assert np.median(geodesic_deg(est, true)) > 90  # the plain error sees the mates
    plain = pose_errors_modulo_group(est, true, np.eye(3)[None])
    np.testing.assert_allclose(plain, geodesic_deg(est, true), atol=1e-6)


@pytest.mark.parametrize("name,flipped", [("C3", False), ("D2", True), ("D7", False)])
def test_symmetric_pose_errors_resolve_mates_under_a_global_rotation(
    name: str, flipped: bool
) -> None:
    """Poses on random symmetry mates, in another frame and hand: ~0 error modulo G only."""
    ops = GROUPS[name]
    vol = _orbit_map(ops, seed=5)
    true = Rotation.random(400, random_state=21).as_matrix()
    mates = ops[np.random.default_rng(22).integers(0, len(ops), 400)]
    q = Rotation.random(random_state=23).as_matrix()
    branch = true @ mates
    est = (flip_hand_poses(branch) if flipped else branch) @ q
    assert rotation_error(est, true).median_deg > 30
    out = symmetric_pose_errors(est, true, vol, None)
    assert out["point_group"] == name and out["point_group_order"] == len(ops)
    # the detected axes are ~0.2 degrees off, so the mates of a true pose are too
    assert out["rotation_error_sym_median_deg"] < 1.0
    assert out["rotation_error_sym_under5_frac"] == 1.0
    assert out["sym_alignment"]["flipped"] is flipped


def test_asymmetric_volume_gives_c1_and_plain_errors() -> None:
    vol = _orbit_map(GROUPS["C1"], n_points=8, seed=9)
    assert detect_point_group(vol).name == "C1"
    true = Rotation.random(200, random_state=31).as_matrix()
    est = true @ Rotation.from_rotvec(np.radians(3.0) * np.eye(3)[[0] * 200]).as_matrix()
    out = symmetric_pose_errors(est @ FRAME, true, vol, None)
    assert out["point_group"] == "C1" and out["symmetry_deg"] is None
    assert out["rotation_error_sym_median_deg"] < 1e-4  # a common tilt is a global rotation


def test_detection_is_cached_per_map_content() -> None:
    vol = _orbit_map(GROUPS["C3"], box=24, seed=1)
    first = detect_point_group_cached(vol)
    assert detect_point_group_cached(vol.copy()) is first
    assert detect_point_group_cached(vol * 2.0) is not first
