"""Multi-process runs under torchrun (gloo, CPU) on a tiny stack: equivalence, kill, resume.

Tolerances (measured on this stack: map 1e-6 relative, rotations 1e-5): a 2-process run with
batch 8 per rank matches a 1-process run with batch 16 and the same seed to 1e-4 of the map's
largest value and 1e-3 in every rotation-matrix entry; the per-epoch losses to 1e-6 relative.
The difference grows with training (the direct stage amplifies rounding: 1.2e-5 relative in the
loss at epoch 6 of the kill-and-resume run, whose first epoch ran on 2 ranks, 2e-3 of the map
after 12), so that run is compared after 6 epochs, losses to 3e-5 relative.
They differ only by floating-point summation order (all-reduce vs one process's mean), because
every global batch is the 1-process batch and the gradient weights make the update identical
(``cryospin.core.engine.distributed``). The encoder runs without batch norm here: per-rank batch
statistics would make the two runs differ by design.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from run_toy_data import make_dataset  # noqa: E402

PY = sys.executable
BASE = {
    "encoder": "multihead",
    "decoder": "hartley",
    "encoder_config": {
        "n_heads": 3,
        "channels": [4, 8, 8],
        "head_hidden": [16],
        "batch_norm": False,
    },
    "switch_epoch": 2,
    # full-resolution loss from the start: the coarse-to-fine mask's few low frequencies leave
    # the poses less constrained and amplify the summation-order differences (2e-3 at epoch 3)
    "coarse_to_fine": False,
    "progress": False,
    "eval_every": 100,
    "num_threads": 1,
    "seed": 1,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("toy"), n=64, box=16, snr=2.0, seed=0)


def _config(folder: Path, name: str, toy: dict, **extra) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "particles": str(toy["star"]), **extra}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    return env


def _inproc(args: list[str]):
    """``cryospin run ARGS`` in this process (one rank, no process group)."""
    from click.testing import CliRunner

    from cryospin.core.cli.main import build_cli

    return CliRunner().invoke(build_cli(), ["run", *args], catch_exceptions=False)


def _cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "cryospin.core", "run", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _torchrun(nproc: int, args: list[str]) -> subprocess.Popen:
    cmd = [PY, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc)]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmd += ["-m", "cryospin.core", "run", *args]
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _map(out: Path) -> np.ndarray:
    return mrcfile.read(out / "map.mrc").astype(np.float64)


def _rotations(out: Path) -> np.ndarray:
    rot = pickle.load((out / "poses.pkl").open("rb"))[0]
    return np.asarray(rot, dtype=np.float64)


def _losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def test_two_processes_match_one_process_with_the_global_batch(toy, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    c1 = _config(tmp_path, "c1", toy, batch_size=16, epochs=3)
    c2 = _config(tmp_path, "c2", toy, batch_size=8, epochs=3)
    r1 = _inproc(["--config", str(c1), "--out", str(one)])
    assert r1.exit_code == 0, r1.output
    # the documented launcher: re-executes itself under torch.distributed.run
    r2 = _cli(["--config", str(c2), "--out", str(two), "--launcher", "torchrun", "--gpus", "2"])
    assert r2.returncode == 0, r2.stdout + r2.stderr
    a, b = _map(one), _map(two)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    assert np.abs(_rotations(one) - _rotations(two)).max() <= 1e-3
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-6)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["batch_size_per_rank"] == 8 and summary["global_batch_size"] == 16
    rec = json.loads((two / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["world_size"] == 2 and rec["global_batch_size"] == 16
    assert abs(sum(rec["head_usage"]) - 1) < 1e-3  # reduced over both ranks' particles
    shards = sorted((two / "checkpoints").glob("poses-rank*.pt"))
    assert [p.name.split(".")[0] for p in shards] == ["poses-rank0-of-2", "poses-rank1-of-2"]
    # each rank holds exactly its half of the pose table (rows, Adam moments, step counts)
    from cryospin.core.engine import checkpoint as ckpt

    held = [ckpt.load(p) for p in shards]
    assert [len(h["indices"]) for h in held] == [32, 32]
    assert all(h["table"]["opt_rot"]["exp_avg"].shape == (32, 3) for h in held)
    assert sorted(np.concatenate([h["indices"] for h in held]).tolist()) == list(range(64))
    # the one-process run writes the same format: one shard
    assert [p.name.split(".")[0] for p in (one / "checkpoints").glob("poses-rank*")] == [
        "poses-rank0-of-1"
    ]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_killing_one_rank_fails_cleanly_and_one_rank_resumes(toy, tmp_path):
    from cryospin.core.engine import checkpoint as ckpt
    from cryospin.core.run.poses import assemble_poses

    out, ref = tmp_path / "killed", tmp_path / "ref"
    cfg = _config(tmp_path, "c", toy, batch_size=8, epochs=6)
    proc = _torchrun(2, ["--config", str(cfg), "--out", str(out)])
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 60
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = _children(proc.pid)
    assert last.exists() and proc.poll() is None and len(workers) == 2, proc.communicate()[0]
    os.kill(workers[1], signal.SIGKILL)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, log
    # the last checkpoint is intact: last.pt loads and names shards that hold every particle
    state = ckpt.load(last)
    assert state["sharded"]["world_size"] == 2 and not state["loop"]["done"]
    rot, _ = assemble_poses(out / "checkpoints", 64)
    assert np.allclose(np.einsum("nij,nkj->nik", rot, rot), np.eye(3), atol=1e-4)
    # resume the 2-rank checkpoint with one process (re-partitioned, global batch kept at 16)
    res = _inproc(["--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert ckpt.load(last)["loop"]["global_batch"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["world_size"] == 1
    assert summary["global_batch_size"] == 16 and summary["batch_size_per_rank"] == 16
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(6))
    # ... and ends where an uninterrupted one-process run with batch 16 ends
    c1 = _config(tmp_path, "c1", toy, batch_size=16, epochs=6)
    assert _inproc(["--config", str(c1), "--out", str(ref)]).exit_code == 0
    a, b = _map(ref), _map(out)
    assert np.abs(a - b).max() <= 1e-3 * np.abs(a).max()
    np.testing.assert_allclose(_losses(out), _losses(ref), rtol=3e-5)  # measured 1.2e-5


def test_steps_where_a_rank_owns_none_of_the_batch_still_match(toy, tmp_path):
    """Global batch 2: about half the steps give one rank nothing (it steps with weight 0 and
    restores its rows); with shift estimation (table shifts in both stages) the run still equals
    one process with batch 2."""
    from cryospin.core.engine.data import ParticleData, open_stack
    from cryospin.core.engine.sharding import ShardData

    full = ParticleData(open_stack(toy["star"]), cache=False)
    plans = [ShardData(full, r, 2, cache=False).plan(1, 0, 2) for r in range(2)]
    empty = sum(len(p[t][0]) == 0 for p in plans for t in range(len(p)))
    assert empty >= 5
    one, two = tmp_path / "one", tmp_path / "two"
    extra = {"epochs": 2, "switch_epoch": 1, "shifts": True}
    c1 = _config(tmp_path, "c1", toy, batch_size=2, **extra)
    c2 = _config(tmp_path, "c2", toy, batch_size=1, **extra)
    assert _inproc(["--config", str(c1), "--out", str(one)]).exit_code == 0
    r2 = _cli(["--config", str(c2), "--out", str(two), "--launcher", "torchrun", "--gpus", "2"])
    assert r2.returncode == 0, r2.stdout + r2.stderr
    a, b = _map(one), _map(two)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    pa = pickle.load((one / "poses.pkl").open("rb"))
    pb = pickle.load((two / "poses.pkl").open("rb"))
    assert np.abs(np.asarray(pa[0]) - np.asarray(pb[0])).max() <= 1e-3
    assert np.abs(np.asarray(pa[1]) - np.asarray(pb[1])).max() <= 1e-3  # origins, Å
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-6)


def _wait(proc: subprocess.Popen) -> str:
    log = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, log
    return log


def test_two_processes_stop_and_resume_to_exactly_the_uninterrupted_run(toy, tmp_path):
    """A 2-process run stopped by ``max_steps`` mid-epoch in the amortized stage (step 5 of 4
    per epoch), resumed and stopped again mid-epoch in the direct stage (step 10), then resumed to
    the end, equals the uninterrupted 2-process run bit for bit: map, poses, per-epoch losses."""
    from cryospin.core.engine import checkpoint as ckpt

    full, part = tmp_path / "full", tmp_path / "part"
    cfg = _config(tmp_path, "c", toy, batch_size=8, epochs=3)
    _wait(_torchrun(2, ["--config", str(cfg), "--out", str(full)]))
    last = part / "checkpoints" / "last.pt"
    for steps, (epoch, step, stage) in ((5, (1, 1, "amortized")), (10, (2, 2, "direct"))):
        stop = _config(tmp_path, f"s{steps}", toy, batch_size=8, epochs=3, max_steps=steps)
        resume = ["--resume"] if steps > 5 else []
        _wait(_torchrun(2, ["--config", str(stop), "--out", str(part), *resume]))
        loop = ckpt.load(last)["loop"]
        assert (loop["epoch"], loop["step_in_epoch"], loop["stage"]) == (epoch, step, stage)
        assert not (part / "map.mrc").exists()
    rest = _config(tmp_path, "rest", toy, batch_size=8, epochs=3, max_steps=1000)  # no stop
    _wait(_torchrun(2, ["--config", str(rest), "--out", str(part), "--resume"]))
    assert np.array_equal(_map(part), _map(full))
    assert np.array_equal(_rotations(part), _rotations(full))
    assert _losses(part) == _losses(full)
