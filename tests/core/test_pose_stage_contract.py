"""Every registered pose stage (built-in or plugin) passes the cryospin.core.testing contract."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cryospin.core.engine.stages import AmortizedStage, DirectStage
from cryospin.core.interfaces import CandidateStage, StepResult
from cryospin.core.registry import get_registry
from cryospin.core.testing.stages import (
    check_stage_construction,
    check_stage_determinism,
    check_stage_hand_over,
    check_stage_state,
    check_stage_train_step,
)

STAGES = get_registry().names("pose_stage")


def test_builtins_registered_and_the_amortized_one_hands_over() -> None:
    assert {"amortized", "direct"} <= set(STAGES)
    assert issubclass(get_registry().get("pose_stage", "amortized"), CandidateStage)


@pytest.mark.parametrize(
    "check",
    [
        check_stage_construction,
        check_stage_train_step,
        check_stage_state,
        check_stage_determinism,
        check_stage_hand_over,
    ],
)
@pytest.mark.parametrize("name", STAGES)
def test_pose_stage_contract(name: str, check) -> None:
    check(get_registry().get("pose_stage", name))


class _Opaque:
    """Not loadable with ``torch.load(weights_only=True)``."""


class _PickledState(DirectStage):
    def state_dict(self) -> dict[str, Any]:
        return {"thing": _Opaque()}


class _ForgetfulState(DirectStage):
    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.count = 0

    def train_step(self, ctx: Any, batch: Any) -> StepResult:
        self.count += 1
        return super().train_step(ctx, batch)

    def state_dict(self) -> dict[str, Any]:
        return {"count": torch.tensor(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # forgets the count


class _NoVolumeStep(DirectStage):
    def train_step(self, ctx: Any, batch: Any) -> StepResult:
        rows = torch.as_tensor(batch.indices)
        return StepResult(0.0, ctx.table.rotations(rows).detach())


class _ImproperRotations(DirectStage):
    def train_step(self, ctx: Any, batch: Any) -> StepResult:
        res = super().train_step(ctx, batch)
        return StepResult(res.loss, -res.rotations)  # det -1


class _TrainsWhileHandingOver(AmortizedStage):
    def best_candidates(self, ctx: Any, data: Any, batch_size: int, progress=None, search=0):
        with torch.no_grad():
            next(ctx.decoder.parameters()).add_(1.0)
        return super().best_candidates(ctx, data, batch_size, progress, search)


class _SkipsParticles(AmortizedStage):
    def best_candidates(self, ctx: Any, data: Any, batch_size: int, progress=None, search=0):
        idx, rot, shifts, wins = super().best_candidates(ctx, data, batch_size, progress, search)
        return idx[1:], rot[1:], shifts, wins[1:]


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (_PickledState, check_stage_state, "does not load with weights_only"),
        (_ForgetfulState, check_stage_state, "state_dict differs after load_state_dict"),
        (_NoVolumeStep, check_stage_train_step, "did not train the volume"),
        (_ImproperRotations, check_stage_train_step, "rotations not proper"),
        (_TrainsWhileHandingOver, check_stage_hand_over, "changed the models' parameters"),
        (_SkipsParticles, check_stage_hand_over, "indices"),
    ],
)
def test_the_contract_catches_a_broken_stage(cls: type, check, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check(cls)
