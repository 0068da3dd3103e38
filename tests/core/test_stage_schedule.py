"""The stage schedule: a third-party pose stage, registered through the plugin manager and named
by the run configuration (``direct_stage``, ``direct_stage_config``), is the one a run uses.

The tiny stage keeps every pose fixed and only fits the volume (a known-pose refinement): the run
must end with exactly the poses the stage saw on each particle's first visit, after visiting every
particle once per epoch, with the stage's own config as given.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cryospin.core import registry as reg
from cryospin.core.engine.config import validate_config
from cryospin.core.engine.data import ParticleData, open_stack
from cryospin.core.engine.stages import build_stages, pose_losses
from cryospin.core.engine.trainer import Trainer
from cryospin.core.errors import ConfigError
from cryospin.core.hookspecs import hookimpl
from cryospin.core.interfaces import ComponentConfig, PoseStage, StepResult
from cryospin.core.testing.stages import check_pose_stage

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from run_toy_data import make_dataset  # noqa: E402

EPOCHS, BATCH, N = 2, 8, 24


class FixedPoseConfig(ComponentConfig):
    volume_steps: int = 1


class FixedPoseStage(PoseStage):
    """Direct role: volume steps on the table's poses, which never move."""

    name = "fixed-pose"
    Config = FixedPoseConfig
    seen: dict[int, torch.Tensor] = {}
    visits: list[int] = []

    def setup(self, ctx: Any) -> None:
        pass

    def train_step(self, ctx: Any, batch: Any) -> StepResult:
        rows = torch.as_tensor(batch.indices)
        rots = ctx.table.rotations(rows).detach()
        for g, r in zip(batch.indices.tolist(), rots, strict=True):
            self.seen.setdefault(g, r.clone())
        self.visits.extend(batch.indices.tolist())
        loss = torch.zeros(())
        for _ in range(self.config.volume_steps):
            loss = pose_losses(ctx, batch, rots[:, None], None).mean()
            ctx.dec_opt.zero_grad(set_to_none=True)
            loss.backward()
            ctx.dec_opt.step()
        return StepResult(float(loss.detach()), rots.cpu())

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@hookimpl
def register_pose_stages(register: Any) -> None:
    register("fixed-pose", FixedPoseStage)


@pytest.fixture
def with_plugin(monkeypatch: pytest.MonkeyPatch):
    """The registry with the third-party plugin module registered in the plugin manager."""
    pm = reg.load_plugin_manager()
    plugin = types.ModuleType("third_party_stages")
    plugin.register_pose_stages = register_pose_stages  # type: ignore[attr-defined]
    pm.register(plugin, name="third-party-stages:plugin")
    registry = reg.build_registry(pm)
    monkeypatch.setattr(reg, "_REGISTRY", registry)
    FixedPoseStage.seen, FixedPoseStage.visits = {}, []
    return registry


def _cfg(**fields: Any) -> Any:
    base = {
        "stage_schedule": "direct",
        "batch_size": BATCH,
        "epochs": EPOCHS,
        "progress": False,
        "eval_every": 100,
        "num_threads": 1,
        "seed": 3,
    }
    return validate_config({**base, **fields})


def test_a_third_party_direct_stage_named_by_config_is_the_one_a_run_uses(
    with_plugin, tmp_path: Path
) -> None:
    toy = make_dataset(tmp_path / "toy", n=N, box=16, snr=2.0, seed=5)
    data = ParticleData(open_stack(toy["star"]), cache=True)
    cfg = _cfg(direct_stage="fixed-pose", direct_stage_config={"volume_steps": 2})
    trainer = Trainer(cfg, data, tmp_path / "run", tmp_path / "run" / "metrics.jsonl")
    result = trainer.fit()
    assert sorted(FixedPoseStage.visits) == sorted(list(range(N)) * EPOCHS)
    assert with_plugin.components["pose_stage"]["fixed-pose"].distribution == "third-party-stages"
    order = np.argsort(result.indices)
    first = torch.stack([FixedPoseStage.seen[g] for g in range(N)]).numpy()
    np.testing.assert_allclose(result.rotations[order], first, atol=1e-6)
    assert build_stages(cfg, with_plugin)["direct"].config.volume_steps == 2


def test_the_schedule_defaults_to_the_builtin_stages(with_plugin) -> None:
    stages = build_stages(_cfg(), with_plugin)
    assert {role: s.name for role, s in stages.items()} == {
        "amortized": "amortized",
        "direct": "direct",
    }


def test_a_stage_that_cannot_hand_over_cannot_play_the_amortized_role(with_plugin) -> None:
    with pytest.raises(ConfigError, match="amortized_stage: pose stage 'fixed-pose' cannot play"):
        build_stages(_cfg(amortized_stage="fixed-pose"), with_plugin)


def test_unknown_stage_and_bad_stage_config_name_the_field(with_plugin) -> None:
    with pytest.raises(reg.PluginError, match="unknown pose_stage 'nope'.*direct, fixed-pose"):
        build_stages(_cfg(direct_stage="nope"), with_plugin)
    with pytest.raises(ConfigError, match="direct_stage_config.bogus"):
        build_stages(_cfg(direct_stage="fixed-pose", direct_stage_config={"bogus": 1}), with_plugin)


def test_the_third_party_stage_passes_the_contract() -> None:
    check_pose_stage(FixedPoseStage)
