"""Per-epoch shift error vs truth (``shift_error_{median,mean}_A`` in ``metrics.jsonl``).

* On an epoch's arrays (:class:`EpochState`) with known poses and shifts: estimates equal to
  the truth moved by a known global 3D translation (and a global rotation of the frame) give an
  error of 0; perturbations that leave the best translation unchanged (opposite offsets on
  particles with the same pose) give errors equal to the perturbations' norms. Without
  estimated shifts (the run does not estimate them) or without true shifts there is no shift
  metric.
* A tiny trainer run on a stack with shifts logs, each epoch, the error of its current poses and
  shifts against the simulator's own shifts (not read back from the STAR file).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.engine.config import validate_config
from cryospin.core.engine.data import ParticleData, open_stack
from cryospin.core.engine.report import epoch_metrics, make_epoch_evaluator
from cryospin.core.engine.results import EpochState, Truth
from cryospin.core.engine.trainer import Trainer
from cryospin.core.run.context import load_truth

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from run_toy_data import make_dataset  # noqa: E402

APIX = 2.5


def _state(est_rot: np.ndarray, shifts_px: np.ndarray, idx: np.ndarray, shifts: bool):
    """The epoch's arrays of particles ``idx`` (shifts stored in float32, as the trainer's)."""
    return EpochState(
        epoch=0,
        indices=idx,
        rotations=est_rot[idx],
        shifts_px=np.asarray(shifts_px[idx], np.float32).astype(np.float64) if shifts else None,
        pixel_size_A=APIX,
        volume=lambda: torch.zeros(1),
        with_map=False,
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
    out = epoch_metrics(_state(est, moved / APIX, idx, True), truth)
    assert out["rotation_error_median_deg"] < 1e-4
    assert out["shift_error_median_A"] < 1e-4 and out["shift_error_mean_A"] < 1e-4

    # offsets +d_i and -d_i on the two particles of each pose cancel in the least-squares
    # normal equations, so the best translation stays t and particle i's error is |d_i|
    d = np.random.default_rng(24).normal(size=(n_pairs, 2)) * 1.5
    offsets = np.concatenate([d, -d])
    out = epoch_metrics(_state(est, (moved + offsets) / APIX, idx, True), truth)
    norms = np.linalg.norm(offsets, axis=1)
    np.testing.assert_allclose(out["shift_error_median_A"], np.median(norms), atol=1e-4)
    np.testing.assert_allclose(out["shift_error_mean_A"], norms.mean(), atol=1e-4)

    # an unperturbed subset: the particles of the indices only
    sub = np.arange(0, 2 * n_pairs, 3)
    out = epoch_metrics(_state(est, moved / APIX, sub, True), truth)
    assert out["shift_error_median_A"] < 1e-4


def test_no_shift_metric_without_estimated_or_true_shifts():
    true, est, true_shifts = _poses(20)
    idx = np.arange(40)
    zeros = np.zeros((40, 2))
    truth = Truth(rotations=true, shifts_A=true_shifts)
    no_estimate = epoch_metrics(_state(est, zeros, idx, False), truth)
    no_truth = epoch_metrics(_state(est, zeros, idx, True), Truth(rotations=true))
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
    evaluate = make_epoch_evaluator(truth)
    tr = Trainer(cfg, data, tmp_path / "ckpt", tmp_path / "metrics.jsonl", evaluate=evaluate)
    tr.fit()
    recs = tr.metrics()
    assert len(recs) == 2 and all("shift_error_median_A" in r for r in recs)
    shift = tr.particles.shift.numpy()  # the trainer's current shifts (pixels)
    assert np.abs(shift).max() > 0  # the run did move the shifts
    # independent: the simulator's shifts, the trainer's final rotations and shifts
    rot = tr.particles.rot.numpy().astype(np.float64)
    res = rotation_error(rot, toy["rotations"].numpy())
    aligned = apply_pose_alignment(rot, res.rotation, res.flipped)
    want = shift_error(
        shift * toy["pixel_size_A"],
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
