"""Tests of cryospin.core.evaluation.outputs (atomic writers) and .plots (PNG files, HEALPix)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import healpy
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.errors import ConfigError
from cryospin.core.evaluation import outputs, plots
from cryospin.core.evaluation.align_maps import rotate_map
from cryospin.core.evaluation.fsc_eval import fsc_vs_truth
from cryospin.core.evaluation.phantoms import blob_map

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------------------------
# fsc.csv and summary.json
# --------------------------------------------------------------------------------------------


def test_fsc_csv_round_trip(tmp_path: Path) -> None:
    truth = blob_map(24, seed=1)
    noisy = truth + np.random.default_rng(0).normal(0, 0.05, truth.shape)
    res = fsc_vs_truth(noisy, truth, 2.0, align=False)
    path = outputs.write_fsc_csv(
        tmp_path / "fsc.csv", res.frequency_per_A, res.fsc, {"fsc_masked": res.fsc_masked}
    )
    assert path == tmp_path / "fsc.csv"
    header = path.read_text().splitlines()[0]
    assert header == "shell,frequency_per_A,resolution_A,fsc,fsc_masked"
    back = outputs.read_fsc_csv(path)
    np.testing.assert_array_equal(back["shell"], np.arange(13))
    np.testing.assert_array_equal(back["frequency_per_A"], res.frequency_per_A)
    np.testing.assert_array_equal(back["fsc"], res.fsc)
    np.testing.assert_array_equal(back["fsc_masked"], res.fsc_masked)
    assert math.isinf(back["resolution_A"][0])
    np.testing.assert_allclose(back["resolution_A"][1:], 1.0 / res.frequency_per_A[1:])
    assert back["resolution_A"][-1] == pytest.approx(4.0)  # Nyquist = 2 apix
    assert _no_temp_files(tmp_path)


def test_fsc_csv_rejects_mismatched_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsc"):
        outputs.write_fsc_csv(tmp_path / "fsc.csv", np.arange(5.0), np.arange(4.0))
    assert not (tmp_path / "fsc.csv").exists()


def test_summary_json_types_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "run" / "summary.json"
    outputs.write_summary_json(path, {"old": 1})
    summary = {
        "n": np.int64(3),
        "x": np.float32(1.5),
        "flag": np.bool_(True),
        "arr": np.arange(3),
        "t": torch.tensor([1.0, 2.0]),
        "inf": math.inf,
        "nested": {"path": Path("a/b"), "list": (1, np.float64(2.5))},
    }
    outputs.write_summary_json(path, summary)
    back = json.loads(path.read_text())
    assert back == {
        "n": 3,
        "x": 1.5,
        "flag": True,
        "arr": [0, 1, 2],
        "t": [1.0, 2.0],
        "inf": None,
        "nested": {"path": "a/b", "list": [1, 2.5]},
    }
    assert _no_temp_files(path.parent)


def test_failed_write_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    outputs.write_summary_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        outputs.write_summary_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"ok": 1}
    assert _no_temp_files(tmp_path)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def test_plot_fsc(tmp_path: Path) -> None:
    truth = blob_map(24, seed=2)
    noisy = truth + np.random.default_rng(1).normal(0, 0.05, truth.shape)
    res = fsc_vs_truth(noisy, truth, 2.0, align=False)
    plots.plot_fsc(res.curves(), tmp_path / "fsc.png", title="test")
    assert _is_png(tmp_path / "fsc.png")
    two = {"a": (res.frequency_per_A, res.fsc), "b": (res.frequency_per_A, res.fsc_masked, 0.143)}
    plots.plot_fsc(two, tmp_path / "fsc2.png", thresholds=[0.143, 0.5])
    assert _is_png(tmp_path / "fsc2.png")
    plots.plot_fsc({}, tmp_path / "empty.png")
    assert _is_png(tmp_path / "empty.png")
    assert _no_temp_files(tmp_path)


def test_viewing_direction_is_the_projection_axis() -> None:
    # A thin rod along u, seen at a pose whose third row is u, projects to a compact spot; seen
    # side-on it projects to a line. So the third row of A is the viewing direction.
    box = 33
    u = np.array([1.0, 2.0, 2.0]) / 3.0
    r = np.arange(box) - box // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    p = np.stack([x, y, z], -1).astype(float)
    along = p @ u
    perp2 = (p * p).sum(-1) - along**2
    rod = np.exp(-0.5 * perp2) * (np.abs(along) < 12)
    e3 = u
    e1 = np.cross(e3, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e3, e1)
    pose = np.stack([e1, e2, e3])  # rows: image x, y and the viewing direction
    assert np.linalg.det(pose) == pytest.approx(1.0)
    end_on = rotate_map(rod, pose).sum(axis=0)
    side_on = rotate_map(rod, np.stack([e3, e2, -e1])).sum(axis=0)

    def spread(img: np.ndarray) -> float:
        w = img / img.sum()
        yy, xx = np.meshgrid(r, r, indexing="ij")
        return float((w * (xx**2 + yy**2)).sum())

    assert spread(end_on) < 4.0 < 20.0 < spread(side_on)
    np.testing.assert_allclose(
        plots.orientation_counts(pose[None], nside=4).nonzero()[0], [healpy.vec2pix(4, *u)]
    )


def test_orientation_counts_and_plot(tmp_path: Path) -> None:
    n, nside = 5000, 8
    rots = Rotation.random(n, random_state=3).as_matrix()
    counts = plots.plot_orientations(rots, tmp_path / "orientations.png", nside=nside)
    assert _is_png(tmp_path / "orientations.png")
    assert counts.shape == (healpy.nside2npix(nside),)
    assert counts.sum() == n
    # each particle's third row lands in its pixel (independently, through healpy.vec2pix)
    expected = np.bincount(healpy.vec2pix(nside, *rots[:, 2, :].T), minlength=counts.size)
    np.testing.assert_array_equal(counts, expected)
    # a known direction: poses whose viewing direction is the centre of pixel 100 land there
    v = np.array(healpy.pix2vec(nside, 100))
    base = Rotation.align_vectors([v], [[0.0, 0.0, 1.0]])[0].as_matrix()  # base e_z = v
    spins = Rotation.from_euler("z", np.linspace(0, 300, 7)[:, None], degrees=True).as_matrix()
    poses = (base @ spins).transpose(0, 2, 1)  # A = (base Rz)^T: third row = base e_z = v
    np.testing.assert_allclose(poses[:, 2, :], np.tile(v, (7, 1)), atol=1e-12)
    one = plots.orientation_counts(poses, nside=nside)
    assert one.sum() == 7 and one[100] == 7
    # uniform poses on equal-area pixels: Poisson counts (variance ~ mean)
    assert 0.7 < counts.var() / counts.mean() < 1.4


def test_plot_head_usage(tmp_path: Path) -> None:
    vals = plots.plot_head_usage(np.bincount([0, 1, 1, 3, 3, 3], minlength=4), tmp_path / "h.png")
    np.testing.assert_array_equal(vals, [1, 2, 0, 3])
    assert _is_png(tmp_path / "h.png")
    shares = plots.plot_head_usage([0.25, 0.5, 0.25], tmp_path / "s.png")
    np.testing.assert_allclose(shares, [0.25, 0.5, 0.25])
    assert _is_png(tmp_path / "s.png")
    one_head = plots.plot_head_usage([1.0, 0.0], tmp_path / "one.png")  # all won by head 0
    np.testing.assert_allclose(one_head, [1.0, 0.0])
    assert _is_png(tmp_path / "one.png")
    assert _no_temp_files(tmp_path)


def test_orientation_plot_symmetry_note(tmp_path: Path) -> None:
    assert plots.symmetry_note(179.4).startswith("C2 detected (179° self-rotation")
    assert "half of the sphere may be empty" in plots.symmetry_note(180.0)
    c3 = plots.symmetry_note(120.0)
    assert c3.startswith("C3 detected") and "2/3 of the sphere" in c3
    rots = Rotation.random(500, random_state=4).as_matrix()
    counts = plots.plot_orientations(rots, tmp_path / "o.png", nside=4, symmetry_deg=180.0)
    assert _is_png(tmp_path / "o.png") and counts.sum() == 500


def test_orientation_plot_without_healpy_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "healpy", None)  # import healpy now raises ImportError
    rots = Rotation.random(10, random_state=5).as_matrix()
    with pytest.raises(ConfigError, match=r"needs healpy: pip install 'cryospin\[plots\]'"):
        plots.plot_orientations(rots, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
