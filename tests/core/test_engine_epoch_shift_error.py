"""Per-epoch shift error vs truth (``shift_error_{median,mean}_A`` in ``metrics.jsonl``).

* On a fake trainer with known poses and shifts: estimates equal to the truth moved by a known
  global 3D translation (and a global rotation of the frame) give an error of 0; perturbations
  that leave the best translation unchanged (opposite offsets on particles with the same pose)
  give errors equal to the perturbations' norms. Without ``cfg.shifts`` or without true shifts
  there is no shift metric.
* A tiny trainer run on a stack with shifts logs, each epoch, the error of its current poses and
  shifts against the simulator's own shifts (not read back from the STAR file).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.engine.config import validate_config
from cryospin.core.engine.data import ParticleData, open_stack
from cryospin.core.engine.report import epoch_metrics
from cryospin.core.engine.results import Truth
from cryospin.core.engine.trainer import Trainer
from cryospin.core.run.context import load_truth

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from run_toy_data import make_dataset  # noqa: E402

APIX = 2.5


def _fake_trainer(est_rot: np.ndarray, shifts_px: np.ndarray, truth: Truth, shifts: bool):
    return SimpleNamespace(
        truth=truth,
        rot=torch.as_tensor(est_rot),
        shift=torch.as_tensor(shifts_px, dtype=torch.float32),
        cfg=SimpleNamespace(shifts=shifts),
        decoder=None,
        data=SimpleNamespace(pixel_size_A=APIX),
    )


def _poses(n_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True poses (each pose twice: particles ``i`` and ``i + n_pairs``), the estimates in a frame
    rotated by ``g`` (aligned estimates ``est @ g^T`` = truth), and true content shifts in Å."""
    half = Rotation.random(n_pairs, random_state=21).as_matrix()
    true = np.concatenate([half, half])
    g = Rotation.random(random_state=22).as_matrix()
    shifts = np.random.default_rng(23).uniform(-8, 8, size=(2 * n_pairs, 2))
    return true, true @ g, shifts


def test_known_global_translation_gives_zero_error_and_balanced_offsets_their_norms():
    n_pairs = 100
    true, est, true_shifts = _poses(n_pairs)
    truth = Truth(rotations=true, shifts_A=true_shifts)
    t = np.array([2.0, -3.5, 1.5])  # Å, the map's global translation (x, y, z)
    # s_est = s_true + (A' t)_xy with A' = true (shift_error module doc)
    moved = true_shifts + np.einsum("nij,j->ni", true[:, :2, :], t)
    idx = np.arange(2 * n_pairs)
    out = epoch_metrics(_fake_trainer(est, moved / APIX, truth, True), idx)
    assert out["rotation_error_median_deg"] < 1e-4
    assert out["shift_error_median_A"] < 1e-4 and out["shift_error_mean_A"] < 1e-4

    # offsets +d_i and -d_i on the two particles of each pose cancel in the least-squares
    # normal equations, so the best translation stays t and particle i's error is |d_i|
    d = np.random.default_rng(24).normal(size=(n_pairs, 2)) * 1.5
    offsets = np.concatenate([d, -d])
    out = epoch_metrics(_fake_trainer(est, (moved + offsets) / APIX, truth, True), idx)
    norms = np.linalg.norm(offsets, axis=1)
    np.testing.assert_allclose(out["shift_error_median_A"], np.median(norms), atol=1e-4)
    np.testing.assert_allclose(out["shift_error_mean_A"], norms.mean(), atol=1e-4)

    # an unperturbed subset: the particles of the indices only
    sub = np.arange(0, 2 * n_pairs, 3)
    out = epoch_metrics(_fake_trainer(est, moved / APIX, truth, True), sub)
    assert out["shift_error_median_A"] < 1e-4


def test_no_shift_metric_without_estimated_or_true_shifts():
    true, est, true_shifts = _poses(20)
    idx = np.arange(40)
    zeros = np.zeros((40, 2))
    truth = Truth(rotations=true, shifts_A=true_shifts)
    no_estimate = epoch_metrics(_fake_trainer(est, zeros, truth, False), idx)
    no_truth = epoch_metrics(_fake_trainer(est, zeros, Truth(rotations=true), True), idx)
    for out in (no_estimate, no_truth):
        assert "rotation_error_median_deg" in out and "shift_error_median_A" not in out


def test_trainer_logs_the_shift_error_of_its_current_shifts(tmp_path):
    from cryospin.core.evaluation.pose_error import apply_pose_alignment, rotation_error
    from cryospin.core.evaluation.shift_error import shift_error

    toy = make_dataset(tmp_path / "toy", n=24, box=16, snr=5.0, seed=4, max_shift_px=2.0)
    cfg = validate_config(
        {
            "particles": str(toy["star"]),
            "stage_schedule": "direct",
            "decoder": "hartley",
            "batch_size": 12,
            "epochs": 2,
            "shifts": True,
            "progress": False,
            "eval_every": 100,
            "num_threads": 1,
        }
    )
    stack = open_stack(toy["star"])
    data = ParticleData(stack, cache=True)
    truth = load_truth(cfg, stack, data.box, data.pixel_size_A)
    # the STAR origins are the simulator's content shifts negated
    np.testing.assert_allclose(
        truth.shifts_A, toy["shifts_px"].numpy() * toy["pixel_size_A"], atol=1e-4
    )
    tr = Trainer(cfg, data, tmp_path / "ckpt", tmp_path / "metrics.jsonl", truth)
    tr.fit()
    recs = tr.metrics()
    assert len(recs) == 2 and all("shift_error_median_A" in r for r in recs)
    assert np.abs(tr.shift.numpy()).max() > 0  # the run did move the shifts
    # independent: the simulator's shifts, the trainer's final rotations and shifts
    rot = tr.rot.numpy().astype(np.float64)
    res = rotation_error(rot, toy["rotations"].numpy())
    aligned = apply_pose_alignment(rot, res.rotation, res.flipped)
    want = shift_error(
        tr.shift.numpy() * toy["pixel_size_A"],
        toy["shifts_px"].numpy() * toy["pixel_size_A"],
        aligned,
    )
    np.testing.assert_allclose(recs[-1]["shift_error_median_A"], want.median, rtol=1e-6)
    np.testing.assert_allclose(recs[-1]["shift_error_mean_A"], want.mean, rtol=1e-6)


def test_summary_reports_the_shift_error_only_when_the_run_estimates_shifts(tmp_path):
    from cryospin.core.run import run_reconstruction

    toy = make_dataset(tmp_path / "toy", n=24, box=16, snr=5.0, seed=5, max_shift_px=2.0)
    for shifts in (True, False):
        cfg = validate_config(
            {
                "particles": str(toy["star"]),
                "stage_schedule": "direct",
                "batch_size": 12,
                "epochs": 1,
                "shifts": shifts,
                "progress": False,
                "num_threads": 1,
            }
        )
        summary = run_reconstruction(cfg, tmp_path / f"run-{shifts}")
        assert ("shift_error_median_A" in summary) is shifts
        assert "rotation_error_median_deg" in summary
