"""Particle sharding for torchrun runs, tested in one process (no process group needed).

* ownership blocks partition every set; each step's per-rank shares are disjoint and their union is
  exactly the one-process batch of ``G * batch_size`` particles (whole stack and a half-set);
* checkpoint rows are re-partitioned by global index for any new number of ranks;
* a one-process run writes the same checkpoint format (one shard), resumes mid-epoch to exactly
  the uninterrupted result, and refuses a checkpoint of the old format.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine import distributed, sharding
from cryospin.core.engine.config import validate_config
from cryospin.core.engine.data import ParticleData, open_stack, split_half_sets
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.engine.results import TrainResult
from cryospin.core.engine.trainer import Trainer
from cryospin.core.errors import InputError

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from run_toy_data import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("toy"), n=40, box=16, snr=2.0, seed=3)


@pytest.mark.parametrize("n", [1, 7, 40, 41])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_owned_blocks_partition_the_set(n, world):
    blocks = [sharding.owned_block(n, r, world) for r in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("half", [None, 1])
def test_rank_shares_union_to_the_one_process_batch(toy, world, half):
    stack = open_stack(toy["star"])
    subset = None if half is None else split_half_sets(stack, 0)[half - 1]
    full = ParticleData(stack, subset=subset, cache=False)
    shards = [sharding.ShardData(full, r, world, cache=False) for r in range(world)]
    b = 6
    for epoch in (0, 3):
        ref = full.batches(seed=5, epoch=epoch, batch_size=world * b)
        plans = [s.plan(5, epoch, world * b) for s in shards]
        assert all(len(p) == len(ref) for p in plans)
        for t, batch in enumerate(ref):
            parts = [s.owned_global[p[t][0]] for s, p in zip(shards, plans, strict=True)]
            assert all(p[t][1] == len(batch) for p in plans)
            got = np.concatenate(parts)
            assert len(got) == len(batch) and set(got.tolist()) == set(batch.tolist())
    # a rank reads only its own particles, and its batches carry local indices
    bt = shards[1].batch(np.array([0, 2]))
    assert bt.indices.tolist() == [0, 2]
    np.testing.assert_array_equal(
        bt.images.numpy(), full.images(shards[1].owned_global[[0, 2]]).numpy()
    )


def _filled_table(gidx: np.ndarray) -> PoseTable:
    """A table whose every entry encodes the particle's global index ``g``."""
    t = PoseTable(len(gidx), betas=(0.9, 0.9))
    g = torch.as_tensor(gidx, dtype=torch.float32)
    t.omega[:] = g[:, None] * torch.tensor([1.0, 2.0, 3.0])
    t.shift[:] = -g[:, None]
    t.base[:] = g[:, None, None]
    t.opt_rot.exp_avg[:] = g[:, None] + 0.5
    t.opt_rot.exp_avg_sq[:] = g[:, None] + 0.25
    t.opt_rot.steps[:] = torch.as_tensor(gidx) + 7
    t.opt_shift.steps[:] = torch.as_tensor(gidx) + 9
    return t


def _rows(gidx: np.ndarray) -> dict:
    g = torch.as_tensor(gidx, dtype=torch.float32)
    return {
        "rot": g[:, None, None].repeat(1, 3, 3),
        "prev_rot": None,
        "winners": np.asarray(gidx) % 3,
        "prev_winners": np.asarray(gidx) % 2,
        "shift": g[:, None].repeat(1, 2),
    }


def _template(n: int) -> dict:
    return {
        "table": PoseTable(n).state_dict(),
        "rot": torch.zeros(n, 3, 3),
        "prev_rot": torch.zeros(n, 3, 3),
        "winners": np.zeros(n, np.int64),
        "prev_winners": np.zeros(n, np.int64),
        "shift": torch.zeros(n, 2),
    }


def _check(out: dict, gidx: np.ndarray) -> None:
    g = torch.as_tensor(gidx, dtype=torch.float32)
    assert torch.equal(out["table"]["omega"][:, 2], 3 * g)
    assert torch.equal(out["table"]["shift"][:, 0], -g)
    assert torch.equal(out["table"]["opt_rot"]["exp_avg_sq"][:, 1], g + 0.25)
    assert torch.equal(out["table"]["opt_rot"]["steps"], torch.as_tensor(gidx) + 7)
    assert torch.equal(out["table"]["opt_shift"]["steps"], torch.as_tensor(gidx) + 9)
    assert out["table"]["opt_rot"]["betas"] == (0.9, 0.9)
    assert torch.equal(out["rot"][:, 1, 2], g) and torch.equal(out["shift"][:, 1], g)
    np.testing.assert_array_equal(out["winners"], gidx % 3)
    assert out["prev_rot"] is None


def test_sharded_checkpoint_is_repartitioned_by_global_index(tmp_path):
    gall = np.arange(3, 40, 2)  # a half-set: global indices need not be contiguous
    old = 2
    files = []
    for r in range(old):
        a, b = sharding.owned_block(len(gall), r, old)
        name = sharding.shard_name(r, old, 4)
        sharding.write_shard(
            tmp_path / name, gall[a:b], _filled_table(gall[a:b]).state_dict(), _rows(gall[a:b])
        )
        files.append(name)
    state = {"sharded": {"world_size": old, "files": files}}
    for new in (1, 3):
        for r in range(new):
            a, b = sharding.owned_block(len(gall), r, new)
            out = sharding.restore_rows(state, tmp_path, gall[a:b], _template(b - a))
            _check(out, gall[a:b])
    with pytest.raises(Exception, match="no pose rows"):
        sharding.restore_rows(state, tmp_path, np.array([0, 3]), _template(2))


def _cfg(toy, **kw):
    return validate_config(
        {
            "particles": str(toy["star"]),
            "encoder": "multihead",
            "decoder": "hartley",
            "encoder_config": {"n_heads": 2, "channels": [4, 8], "head_hidden": [8]},
            "batch_size": 12,
            "epochs": 3,
            "switch_epoch": 1,
            "progress": False,
            "eval_every": 100,
            "num_threads": 1,
            "seed": 2,
            **kw,
        }
    )


def test_one_process_checkpoint_is_one_shard_and_resumes_exactly(toy, tmp_path):
    cfg = _cfg(toy)
    data = ParticleData(open_stack(toy["star"]), cache=True)
    ref = Trainer(cfg, data, tmp_path / "a", tmp_path / "a.jsonl").fit()
    names = [p.name for p in sharding.shard_files(tmp_path / "a")]
    last = ckpt.load(tmp_path / "a" / "last.pt")
    assert last["loop"]["done"] and last["sharded"] == {"world_size": 1, "files": names}
    assert names == [f"poses-rank0-of-1.{last['loop']['save_seq']}.pt"]  # older ones removed
    shard = ckpt.load(tmp_path / "a" / names[0])
    np.testing.assert_array_equal(shard["indices"], np.arange(40))
    assert shard["table"]["omega"].shape == (40, 3) and shard["rot"].shape == (40, 3, 3)
    # stopped mid-epoch in the direct stage (step 6; 4 steps per epoch), then resumed
    with pytest.raises(ckpt.StopRequested):
        Trainer(_cfg(toy, max_steps=6), data, tmp_path / "c", tmp_path / "c.jsonl").fit()
    assert ckpt.load(tmp_path / "c" / "last.pt")["loop"]["step_in_epoch"] == 2
    res = Trainer(cfg, data, tmp_path / "c", tmp_path / "c.jsonl").fit(resume=True)
    assert torch.equal(res.volume, ref.volume)
    np.testing.assert_array_equal(res.rotations, ref.rotations)
    assert res.global_batch == 12
    # a checkpoint of the format before the one trainer is refused in one line
    state = ckpt.load(tmp_path / "c" / "last.pt")
    ckpt.save_atomic({**state, "version": 1}, tmp_path / "c" / "last.pt")
    with pytest.raises(InputError, match="format 1"):
        Trainer(cfg, data, tmp_path / "c", tmp_path / "c.jsonl").fit(resume=True)


def test_launcher_rebuilds_the_run_command():
    flags = {"particles": "p.star", "box": 32, "shifts": False, "half_sets": True, "seed": None}
    args = distributed.cli_args(flags, True, "out", "c.yaml")
    assert args == [
        "--out", "out", "--config", "c.yaml", "--particles", "p.star", "--box", "32",
        "--no-shifts", "--half-sets", "--resume",
    ]  # fmt: skip
    cmd = distributed.torchrun_command(2, args)
    assert cmd[1:9] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] + [
        "-m", "cryospin.core", "run",
    ]  # fmt: skip
    assert cmd[9:] == args
    result = TrainResult(torch.zeros(1), np.arange(2), np.zeros((2, 3, 3)), None, None)
    result.global_batch = 16  # a resumed run keeps its checkpoint's global batch
    assert distributed.summary_fields([result]) == {
        "world_size": 1, "batch_size_per_rank": 16, "global_batch_size": 16,
    }  # fmt: skip
