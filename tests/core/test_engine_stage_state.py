"""Pose stages' own state (``state_dict`` / ``load_state_dict``) is checkpointed and resumed.

A direct stage that counts its steps and sums its losses (a float64 tensor) is stopped by
``max_steps`` mid-epoch and resumed by a fresh trainer with a fresh stage: it must end with the
counter and sum of an uninterrupted run. A checkpoint without the ``stages`` key (written before
stage states were saved) still resumes, with the stage's fresh state.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine.config import validate_config
from cryospin.core.engine.data import ParticleData, open_stack
from cryospin.core.engine.stages import DirectStage, StepResult
from cryospin.core.engine.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from run_toy_data import make_dataset  # noqa: E402

EPOCHS, BATCH, N = 3, 8, 24  # 3 steps per epoch, 9 in all


class CountingDirectStage(DirectStage):
    """The direct stage plus its own state: a step counter and a float64 sum of the losses."""

    def __init__(self) -> None:
        self.steps = 0
        self.loss_sum = torch.zeros((), dtype=torch.float64)

    def train_step(self, ctx: Any, batch: Any) -> StepResult:
        res = super().train_step(ctx, batch)
        self.steps += 1
        self.loss_sum += res.loss
        return res

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "loss_sum": self.loss_sum.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.loss_sum = state["loss_sum"].clone()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    toy = make_dataset(tmp_path_factory.mktemp("toy"), n=N, box=16, snr=2.0, seed=5)
    return ParticleData(open_stack(toy["star"]), cache=True)


def _trainer(data: ParticleData, folder: Path, max_steps: int | None = None) -> Trainer:
    cfg = validate_config(
        {
            "stage_schedule": "direct",
            "decoder": "hartley",
            "batch_size": BATCH,
            "epochs": EPOCHS,
            "pose_steps": 1,
            "progress": False,
            "eval_every": 100,
            "num_threads": 1,
            "seed": 7,
            "max_steps": max_steps,
        }
    )
    tr = Trainer(cfg, data, folder, folder / "metrics.jsonl")
    tr.stages["direct"] = CountingDirectStage()
    return tr


def _stop(data: ParticleData, folder: Path, max_steps: int) -> None:
    with pytest.raises(ckpt.StopRequested):
        _trainer(data, folder, max_steps).fit()


def test_stage_state_survives_a_stop_and_resume(data, tmp_path):
    full = _trainer(data, tmp_path / "full")
    full.fit()
    ref = full.stages["direct"]
    assert ref.steps == EPOCHS * N // BATCH

    _stop(data, tmp_path / "part", max_steps=4)  # mid-epoch 1
    saved = ckpt.load(tmp_path / "part" / ckpt.CHECKPOINT_NAME)["stages"]["direct"]
    assert saved["steps"] == 4
    resumed = _trainer(data, tmp_path / "part")
    resumed.fit(resume=True)
    got = resumed.stages["direct"]
    assert got.steps == ref.steps
    torch.testing.assert_close(got.loss_sum, ref.loss_sum, rtol=1e-6, atol=0.0)


def test_checkpoint_without_stage_states_still_resumes(data, tmp_path):
    _stop(data, tmp_path, max_steps=4)
    path = tmp_path / ckpt.CHECKPOINT_NAME
    state = ckpt.load(path)
    del state["stages"]
    ckpt.save_atomic(state, path)
    resumed = _trainer(data, tmp_path)
    resumed.fit(resume=True)
    assert resumed.stages["direct"].steps == EPOCHS * N // BATCH - 4  # fresh counter
    assert resumed.loop.global_step == EPOCHS * N // BATCH
