"""Tests of cryospin.core.evaluation.align_maps and the ``cryospin align-maps`` command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.evaluation.align_maps import (
    align_maps,
    apply_alignment,
    flip_hand,
    hopf_grid,
    real_space_correlation,
    rotate_map,
)
from cryospin.core.evaluation.phantoms import blob_map
from cryospin.core.evaluation.pose_error import FLIP, geodesic_deg

REPO = Path(__file__).resolve().parents[2]


def _com(vol: np.ndarray) -> np.ndarray:
    d = vol.shape[0]
    r = np.arange(d) - d // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    w = vol / vol.sum()
    return np.array([(w * x).sum(), (w * y).sum(), (w * z).sum()])


def _gaussian_at(box: int, centre: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(box) - box // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    d2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
    return np.exp(-0.5 * d2 / sigma**2)


# --------------------------------------------------------------------------------------------
# Resampling conventions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [16, 17])
def test_flip_hand_mirrors_z_about_centre(box: int) -> None:
    vol = np.zeros((box, box, box))
    c = box // 2
    vol[c, c, c] = 1.0
    vol[c + 3, c - 1, c + 2] = 2.0  # (x, y, z) = (2, -1, 3) from the centre
    out = flip_hand(vol)
    assert out[c, c, c] == 1.0
    assert out[c - 3, c - 1, c + 2] == 2.0  # z -> -z
    np.testing.assert_array_equal(flip_hand(out), vol)
    t = torch.as_tensor(vol)
    np.testing.assert_array_equal(flip_hand(t).numpy(), out)


@pytest.mark.parametrize("box", [24, 25])
def test_rotate_map_moves_features_to_R_y_plus_t(box: int) -> None:
    y = np.array([3.0, -2.0, 1.0])
    vol = _gaussian_at(box, y)
    rot = Rotation.from_euler("zyx", [30, 20, -40], degrees=True).as_matrix()
    t = np.array([1.5, -0.5, 2.0])
    out = rotate_map(vol, rot, t)
    np.testing.assert_allclose(_com(out), rot @ y + t, atol=0.05)
    # the centre stays on the centre voxel (no half-voxel offset), for any rotation
    delta = np.zeros((box, box, box))
    delta[box // 2, box // 2, box // 2] = 1.0
    moved = rotate_map(delta, rot)
    c = box // 2
    assert moved[c, c, c] == pytest.approx(1.0)
    np.testing.assert_allclose(_com(moved), 0.0, atol=1e-9)
    # identity resampling is exact; flip=True equals flip_hand first
    np.testing.assert_allclose(rotate_map(vol, np.eye(3)), vol, atol=1e-12)
    np.testing.assert_allclose(rotate_map(vol, rot, flip=True), rotate_map(flip_hand(vol), rot))


def test_hopf_grid_covers_so3() -> None:
    grid = hopf_grid()
    assert grid.shape == (4608, 3, 3)
    np.testing.assert_allclose(
        grid @ grid.transpose(0, 2, 1), np.broadcast_to(np.eye(3), grid.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(grid), 1.0, atol=1e-12)
    probes = Rotation.random(300, random_state=0).as_matrix()
    nearest = np.array([geodesic_deg(grid, p).min() for p in probes])
    assert nearest.max() < 16.0


# --------------------------------------------------------------------------------------------
# align_maps
# --------------------------------------------------------------------------------------------


def _expected(s: np.ndarray, t: np.ndarray, flipped: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``moving = rotate_map(ref, S, t, flip)``: R = H(S^T), t' = -R (F^f t)."""
    r = FLIP @ s.T @ FLIP if flipped else s.T
    return r, -r @ (FLIP @ t if flipped else t)


@pytest.mark.parametrize(("flipped", "seed"), [(False, 0), (True, 1)])
def test_align_recovers_rotation_hand_and_shift(flipped: bool, seed: int) -> None:
    apix = 2.5
    ref = blob_map(32, seed=seed)
    s = Rotation.random(random_state=10 + seed).as_matrix()
    t = np.array([2.0, -3.0, 1.5])
    moving = rotate_map(ref, s, t, flip=flipped)
    aligned, info = align_maps(ref, moving, apix)
    r_exp, t_exp = _expected(s, t, flipped)
    assert info.flipped is flipped
    assert geodesic_deg(info.rotation, r_exp) < 2.0
    np.testing.assert_allclose(info.shift_A / apix, t_exp, atol=0.5)
    assert info.correlation > 0.99
    assert real_space_correlation(ref, aligned) == pytest.approx(info.correlation)
    assert aligned.shape == ref.shape and aligned.dtype == np.float32
    # the same transform applied to another map on the grid
    np.testing.assert_allclose(apply_alignment(moving, info), aligned, atol=1e-5)
    d = info.to_dict()
    assert d["flipped"] is flipped and len(d["rotation"]) == 3


def test_align_with_noise_and_hand_option() -> None:
    rng = np.random.default_rng(3)
    ref = blob_map(32, seed=4)
    s = Rotation.random(random_state=5).as_matrix()
    moving = rotate_map(ref, s, flip=True) + rng.normal(0, 0.1 * ref.std(), ref.shape)
    noisy_ref = ref + rng.normal(0, 0.1 * ref.std(), ref.shape)
    _, info = align_maps(noisy_ref, moving, 3.0)
    assert info.flipped
    assert geodesic_deg(info.rotation, _expected(s, np.zeros(3), True)[0]) < 3.0
    # forcing the wrong hand gives a clearly worse fit
    _, same = align_maps(noisy_ref, moving, 3.0, hands="same")
    assert not same.flipped and same.correlation < info.correlation - 0.02


def test_align_large_shift_scale_and_offset() -> None:
    ref = blob_map(40, seed=12)
    s = Rotation.random(random_state=13).as_matrix()
    t = np.array([7.0, -6.0, 5.0])
    moving = 3.0 * rotate_map(ref, s, t) + 0.7  # other scale, solvent level 0.7
    aligned, info = align_maps(ref, moving, 1.0)
    r_exp, t_exp = _expected(s, t, False)
    assert not info.flipped
    assert geodesic_deg(info.rotation, r_exp) < 1.0
    np.testing.assert_allclose(info.shift_A, t_exp, atol=0.5)
    assert info.correlation > 0.99
    assert np.median(aligned[:4]) == pytest.approx(0.7, abs=0.01)  # solvent fill, not zeros


def test_align_real_ribosome_map(shared_data: Path) -> None:
    # The cisTEM potential of the 80S ribosome (80^3, 4 Å): a degraded, mirrored, rotated copy
    # (15 Å low-pass, noise) is put back within a degree.
    from cryospin.core.engine.io_bridge import read_map
    from cryospin.core.evaluation.align_maps import lowpass_gaussian

    vol, apix = read_map(shared_data / "maps" / "ribosome_4ug0_potential_4A.mrc")
    assert vol.shape == (80, 80, 80) and apix == pytest.approx(4.0)
    s = Rotation.random(random_state=14).as_matrix()
    moving = rotate_map(vol, s, [2.0, -1.0, 3.0], flip=True)
    moving = lowpass_gaussian(moving, apix / 15.0 / 2) + np.random.default_rng(15).normal(
        0, 0.3 * moving.std(), moving.shape
    )
    _, info = align_maps(vol, moving, apix)
    assert info.flipped
    assert geodesic_deg(info.rotation, _expected(s, np.zeros(3), True)[0]) < 1.0
    assert info.correlation > 0.7


def test_align_64_is_fast() -> None:
    ref = blob_map(64, seed=6)
    moving = rotate_map(ref, Rotation.random(random_state=7).as_matrix(), [1.0, 2.0, -1.0])
    start = time.perf_counter()
    _, info = align_maps(ref, moving, 2.0)
    elapsed = time.perf_counter() - start
    assert info.correlation > 0.99
    # a few seconds on two idle cores; generous for loaded CI machines
    assert elapsed < 90.0


def test_align_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        align_maps(np.zeros((8, 8, 8)), np.zeros((10, 10, 10)), 1.0)
    with pytest.raises(ValueError, match="cubic"):
        align_maps(np.zeros((8, 8, 9)), np.zeros((8, 8, 9)), 1.0)
    with pytest.raises(ValueError, match="hands"):
        align_maps(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), 1.0, hands="left")


# --------------------------------------------------------------------------------------------
# cryospin align-maps
# --------------------------------------------------------------------------------------------


def _write(path: Path, vol: np.ndarray, apix: float) -> None:
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(vol, dtype=np.float32))
        mrc.voxel_size = apix


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryospin.core", *args], capture_output=True, text=True, cwd=REPO
    )


def test_cli_align_maps_writes_aligned_map(tmp_path: Path) -> None:
    import mrcfile

    apix = 3.0
    ref = blob_map(32, seed=8)
    s = Rotation.random(random_state=9).as_matrix()
    _write(tmp_path / "A.mrc", ref, apix)
    _write(tmp_path / "B.mrc", rotate_map(ref, s, [1.0, 0.0, -2.0], flip=True), apix)
    done = _cli(
        "align-maps",
        str(tmp_path / "A.mrc"),
        str(tmp_path / "B.mrc"),
        "--out",
        str(tmp_path / "C.mrc"),
        "--json",
        str(tmp_path / "al.json"),
        "--fsc-csv",
        str(tmp_path / "fsc.csv"),
    )
    assert done.returncode == 0, done.stderr
    assert "hand flipped: yes" in done.stdout
    with mrcfile.open(tmp_path / "C.mrc") as mrc:
        out = np.array(mrc.data)
        assert float(mrc.voxel_size.x) == pytest.approx(apix)
    assert real_space_correlation(ref, out) > 0.99
    info = json.loads((tmp_path / "al.json").read_text())
    assert info["flipped"] is True and info["correlation"] > 0.99
    assert geodesic_deg(np.array(info["rotation"]), FLIP @ s.T @ FLIP) < 2.0
    assert (tmp_path / "fsc.csv").read_text().startswith("shell,frequency_per_A,resolution_A,fsc")


def _cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from cryospin.core.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_align_maps_help_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli_in_process(capsys, "align-maps", "--help")
    assert code == 0 and "Example:" in out and "--out" in out
    _write(tmp_path / "A.mrc", np.zeros((8, 8, 8)), 1.0)
    _write(tmp_path / "B.mrc", np.zeros((10, 10, 10)), 1.0)
    _write(tmp_path / "B2.mrc", np.zeros((8, 8, 8)), 2.0)
    a, c = str(tmp_path / "A.mrc"), str(tmp_path / "C.mrc")
    code, _, err = _cli_in_process(capsys, "align-maps", a, str(tmp_path / "B.mrc"), "--out", c)
    assert code == 2 and "differs" in err
    code, _, err = _cli_in_process(capsys, "align-maps", a, str(tmp_path / "B2.mrc"), "--out", c)
    assert code == 2 and "voxel sizes differ" in err
    assert not (tmp_path / "C.mrc").exists()
