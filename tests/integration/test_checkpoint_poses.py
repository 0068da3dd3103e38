"""``poses.star`` and ``poses.pkl`` are written at every checkpoint, not only at the end.

A run stopped by ``max_steps`` (one process, and 2 ranks under torchrun with gloo) leaves pose
files in ``--out`` whose N rows are the checkpointed poses. The reference is read independently
from the checkpoint files with ``torch.load`` (``last.pt`` and each process's shard file) and
computed in float64 with scipy: ``R_i = exp(w_i) R0_i`` from the table's axis-angle ``w`` and base
``R0`` in the direct stage, the stored per-particle rotation in the amortized stage. The STAR file's
Euler angles are turned back into matrices with scipy (RELION ``A`` is the transpose of
``Rotation.from_euler("ZYZ", [rot, tilt, psi])``, docs/CONVENTIONS.md item 8). Tolerance: 1e-4 per
matrix entry (the STAR file stores angles to 6 decimals of a degree; the table is float32).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch
import yaml
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).parent))
from run_toy_data import make_dataset  # noqa: E402
from test_torchrun import BASE, _env, _free_port, _inproc  # noqa: E402

N, APIX = 48, 6.0


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("toy"), n=N, box=16, snr=2.0, seed=4)


def _config(folder: Path, toy: dict, **extra) -> Path:
    path = folder / "c.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "particles": str(toy["star"]), "shifts": True, **extra})
    )
    return path


def _star_poses(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``A`` ``(N, 3, 3)`` and origins ``(N, 2)`` Å from ``out/poses.star`` (scipy)."""
    df = starfile.read(out / "poses.star", always_dict=True)["particles"]
    eul = df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float64)
    rot = Rotation.from_euler("ZYZ", eul, degrees=True).as_matrix().transpose(0, 2, 1)
    return rot, df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(np.float64)


def _expected(table: dict, rot: torch.Tensor, shift: torch.Tensor, ready: bool):
    """Checkpointed rotations and shifts (px) of every row of one state, in float64."""
    if not ready:
        return rot.double().numpy(), shift.double().numpy()
    w = table["omega"].double().numpy()
    base = table["base"].double().numpy()
    return Rotation.from_rotvec(w).as_matrix() @ base, table["shift"].double().numpy()


def _checkpoint_rows(ckpt_dir: Path, world: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(global indices, rotations, shifts px)`` of every shard of ``ckpt_dir/last.pt``."""
    state = torch.load(ckpt_dir / "last.pt", weights_only=False)
    assert state["sharded"]["world_size"] == world == len(state["sharded"]["files"])
    ready = state["loop"]["table_ready"]
    parts = []
    for name in state["sharded"]["files"]:
        sh = torch.load(ckpt_dir / name, weights_only=False)
        parts.append((sh["indices"], *_expected(sh["table"], sh["rot"], sh["shift"], ready)))
    idx, rot, shift = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return idx, rot, shift


def _check(out: Path, rot: np.ndarray, shift: np.ndarray) -> None:
    got_rot, got_origin = _star_poses(out)
    assert got_rot.shape == (N, 3, 3)
    np.testing.assert_allclose(got_rot, rot, atol=1e-4)
    np.testing.assert_allclose(got_origin, -shift * APIX, atol=1e-4)
    pkl_rot, pkl_t = pickle.load((out / "poses.pkl").open("rb"))
    np.testing.assert_allclose(pkl_rot, rot, atol=1e-5)
    np.testing.assert_allclose(pkl_t, -shift / 16, atol=1e-5)  # cryoDRGN: origin px / box


@pytest.mark.parametrize("max_steps,ready", [(2, False), (8, True)])
def test_one_process_checkpoint_writes_the_checkpointed_poses(toy, tmp_path, max_steps, ready):
    # 3 steps per epoch, switch after epoch 2: step 2 is amortized, step 8 direct (mid-epoch)
    out = tmp_path / "run"
    cfg = _config(tmp_path, toy, batch_size=16, epochs=4, max_steps=max_steps)
    res = _inproc(["--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 0 and "max_steps" in res.output, res.output
    assert not (out / "map.mrc").exists()  # stopped before the end
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["loop"]["table_ready"] is ready and state["loop"]["global_step"] == max_steps
    idx, rot, shift = _checkpoint_rows(out / "checkpoints", 1)
    assert idx.tolist() == list(range(N))
    if not ready:  # the poses the encoder gave the particles of the last two batches
        assert (np.abs(rot - np.eye(3)).max(axis=(1, 2)) > 1e-3).sum() >= 16
    _check(out, rot, shift)


def test_two_rank_checkpoint_writes_the_assembled_poses(toy, tmp_path):
    import subprocess

    out = tmp_path / "run"
    cfg = _config(tmp_path, toy, batch_size=8, epochs=4, max_steps=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    cmd += ["--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    cmd += ["--master-port", str(_free_port()), "-m", "cryospin.core", "run"]
    cmd += ["--config", str(cfg), "--out", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt_dir = out / "checkpoints"
    state = torch.load(ckpt_dir / "last.pt", weights_only=False)
    assert state["loop"]["table_ready"]
    for name in state["sharded"]["files"]:  # each rank saved only its own rows
        assert len(torch.load(ckpt_dir / name, weights_only=False)["indices"]) == N // 2
    idx, r, s = _checkpoint_rows(ckpt_dir, 2)
    rot, shift = np.zeros((N, 3, 3)), np.full((N, 2), np.nan)
    rot[idx], shift[idx] = r, s
    assert np.isfinite(shift).all()
    _check(out, rot, shift)


def test_half_set_checkpoints_fill_their_own_rows(toy, tmp_path):
    """Half 1 finished, half 2 stopped by ``max_steps``: each half's rows come from its own
    checkpoint (which holds its particle set only), and nothing else."""
    from cryospin.core.engine import checkpoint as ckpt
    from cryospin.core.engine.config import validate_config
    from cryospin.core.engine.data import ParticleData, open_stack, split_half_sets
    from cryospin.core.engine.trainer import Trainer
    from cryospin.core.run.poses import CheckpointPoses

    stack = open_stack(toy["star"])
    halves = split_half_sets(stack, 1)
    dirs = [tmp_path / f"half{k}" / "checkpoints" for k in (1, 2)]
    data = [ParticleData(stack, subset=h, cache=False) for h in halves]
    out = tmp_path / "out"
    writer = CheckpointPoses(out, str(toy["star"]), stack, APIX, 16, dirs)
    base = {**BASE, "particles": str(toy["star"]), "batch_size": 8, "epochs": 1, "shifts": True}
    for k, steps in ((0, None), (1, 2)):
        cfg = validate_config({**base, "max_steps": steps})
        tr = Trainer(cfg, data[k], dirs[k], tmp_path / "m.jsonl", tag={"half": k + 1})
        tr.on_checkpoint = writer
        if steps is None:
            tr.fit()
        else:
            with pytest.raises(ckpt.StopRequested):
                tr.fit()
    rot, shift = np.tile(np.eye(3), (N, 1, 1)), np.zeros((N, 2))
    for k in (0, 1):
        state = torch.load(dirs[k] / "last.pt", weights_only=False)
        assert not state["loop"]["table_ready"]
        idx, r, s = _checkpoint_rows(dirs[k], 1)
        np.testing.assert_array_equal(idx, halves[k])
        rot[idx], shift[idx] = r, s
    # half 2 stopped after 2 of its 3 batches: its last 8 particles still have no pose
    assert (np.abs(rot[halves[1]] - np.eye(3)).max(axis=(1, 2)) < 1e-12).sum() == 8
    _check(out, rot, shift)
