"""The run folder contract through ``cryospin run``: reused folders, ``--resume`` checks, the lock,
crafted checkpoints, a non-finite loss, ``--device`` and ``--out`` errors, permissions, leftovers.

Every refusal must be exit 2 with one ``error:`` line naming the field, and leave the folder's
files byte-identical."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from run_toy_data import make_dataset  # noqa: E402

from cryospin.core.cli.main import main  # noqa: E402

TINY = {
    "encoder_config": {"n_heads": 2, "channels": [4, 8, 8], "head_hidden": [16]},
    "batch_size": 8,
    "switch_epoch": 1,
    "progress": False,
    "eval_every": 100,
    "num_threads": 1,
}
#: files that are allowed to change on a refused start (the event log, the lock's pid)
VOLATILE = {"run.log", ".lock"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data = make_dataset(root / "a", n=24, box=16, snr=2.0, seed=0)
    data["other"] = make_dataset(root / "b", n=24, box=16, snr=2.0, seed=7)["star"]
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    data["cfg"] = cfg
    return data


def _cli(args: list[str], capsys) -> tuple[int, list[str]]:
    """Run ``cryospin run ARGS`` in-process: ``(exit status, stderr lines starting 'error:')``."""
    try:
        main(["run", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [x for x in err.splitlines() if x.startswith("error:")]


def _base(toy, out: Path, *extra: str) -> list[str]:
    return ["--particles", str(toy["star"]), "-o", str(out), "--config", str(toy["cfg"]), *extra]


@pytest.fixture(scope="module")
def finished(toy, tmp_path_factory):
    """A finished one-epoch run (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", *_base(toy, out, "--epochs", "1")]) is None
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in VOLATILE
    }


def _refused(args: list[str], capsys, out: Path, needle: str) -> None:
    before = _snapshot(out)
    code, errors = _cli(args, capsys)
    assert code == 2 and len(errors) == 1 and needle in errors[0], errors
    assert _snapshot(out) == before, "a refused start changed the run folder"


def test_a_new_run_refuses_a_folder_holding_a_run_unless_overwrite(toy, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    _refused(_base(toy, out, "--epochs", "1"), capsys, out, "already holds a run")
    stale = [out / ".map.mrc.x1y2.tmp.mrc", out / "checkpoints" / ".last.pt.a1b2.tmp.pt"]
    for p in stale:
        p.write_bytes(b"partial")
    old = os.umask(0o022)
    try:
        code, errors = _cli(_base(toy, out, "--epochs", "1", "--seed", "5", "--overwrite"), capsys)
    finally:
        os.umask(old)
    assert code == 0 and not errors
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 5
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0]
    assert not any(p.exists() for p in stale)
    for name in ("map.mrc", "poses.star", "summary.json", "config.yaml", "checkpoints/last.pt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--shifts"], "'shifts' differs from the run in"),
        (["--decoder", "mlp"], "'decoder' differs"),
        (["--seed", "3"], "'seed' differs"),
        (["--set", "encoder_config.n_heads=3"], "'encoder_config' differs"),
    ],
)
def test_resume_refuses_a_changed_setting_and_changes_nothing(
    finished, tmp_path, capsys, extra, needle
):
    out = _copy(finished, tmp_path / "run")
    _refused(["-o", str(out), "--resume", *extra], capsys, out, needle)


def test_resume_refuses_other_particles_and_fewer_epochs(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_base(toy, out, "--epochs", "2", "--set", "max_steps=1"), capsys)[0] == 0
    _refused(
        ["-o", str(out), "--resume", "--particles", str(toy["other"])],
        capsys,
        out,
        "the particle set differs",
    )
    _refused(["-o", str(out), "--resume", "--epochs", "1"], capsys, out, "'epochs' can only grow")


def test_resume_needs_a_complete_config_yaml(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text("\n".join(text.splitlines()[:6]) + "\n")  # truncated
    _refused(["-o", str(out), "--resume"], capsys, out, "config.yaml is incomplete")
    (out / "config.yaml").unlink()
    _refused(["-o", str(out), "--resume"], capsys, out, "config.yaml is missing")
    _refused(["-o", str(tmp_path / "nothing"), "--resume"], capsys, out, "config.yaml is missing")
    assert not (tmp_path / "nothing").exists()


def test_resume_without_a_checkpoint_is_an_honest_fresh_start(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    shutil.rmtree(out / "checkpoints")
    code, errors = _cli(["-o", str(out), "--resume"], capsys)
    assert code == 0 and not errors
    assert json.loads((out / "summary.json").read_text())["resumed"] is False
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_run_without_manifest_still_resumes_and_gets_one(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")  # as written before run.json existed
    (out / "run.json").unlink()
    try:
        main(["run", "-o", str(out), "--resume", "--epochs", "2"])
    except SystemExit as exc:
        raise AssertionError(f"exit {exc.code}") from None
    err = capsys.readouterr().err
    assert "particle set is not checked" in err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["particles"]["n_particles"] == 24 and manifest["config"]["epochs"] == 2
    assert json.loads((out / "summary.json").read_text())["resumed"] is True


def _map(out: Path) -> np.ndarray:
    from cryospin.io.mrc import read_map

    return read_map(out / "map.mrc")[0]


def test_more_epochs_extend_a_finished_run_despite_a_torn_metrics_line(
    toy, finished, tmp_path, capsys
):
    out = _copy(finished, tmp_path / "run")
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 1, "stage": "dir')  # a kill mid-append
    code, errors = _cli(["-o", str(out), "--resume", "--epochs", "2"], capsys)
    assert code == 0 and not errors
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1]  # trained the extra epoch; torn line dropped
    assert json.loads((out / "summary.json").read_text())["resumed"] is True
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 2
    ref = tmp_path / "two"
    assert _cli(_base(toy, ref, "--epochs", "2"), capsys)[0] == 0
    np.testing.assert_allclose(_map(out), _map(ref), rtol=1e-5, atol=1e-6)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_without_running_it(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    marker = tmp_path / "PWNED"
    state = {"version": 1, "epoch": 0, "payload": _Payload(marker)}
    torch.save(state, out / "checkpoints" / "last.pt")
    _refused(["-o", str(out), "--resume", "--epochs", "3"], capsys, out, "refused to load")
    assert not marker.exists()
    (out / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 torn")
    _refused(["-o", str(out), "--resume"], capsys, out, "not a valid checkpoint")


def test_a_checkpoint_of_an_older_format_is_refused_before_anything_changes(
    finished, tmp_path, capsys
):
    from cryospin.core.engine import checkpoint as ckpt

    out = _copy(finished, tmp_path / "run")
    last = out / "checkpoints" / "last.pt"
    ckpt.save_atomic({**ckpt.load(last), "version": 1}, last)
    _refused(["-o", str(out), "--resume", "--epochs", "3"], capsys, out, "has format 1")


def test_a_non_finite_loss_stops_at_once_and_keeps_the_last_checkpoint(
    finished, tmp_path, capsys, monkeypatch
):
    from cryospin.core.engine.trainer import Trainer

    out = _copy(finished, tmp_path / "run")
    before = _snapshot(out)

    def diverged(self, stage, gidx, n_global=None):
        return float("nan"), len(gidx)

    monkeypatch.setattr(Trainer, "_step", diverged)
    code, errors = _cli(["-o", str(out), "--resume", "--epochs", "2"], capsys)
    assert code == 2 and len(errors) == 1, errors
    assert "loss became nan at epoch 1, step 0" in errors[0] and "likely cause" in errors[0]
    after = _snapshot(out)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed <= {"config.yaml", "run.json"}  # the --epochs 2 the user asked for
    for name in ("checkpoints/last.pt", "map.mrc", "metrics.jsonl", "summary.json", "poses.star"):
        assert after[name] == before[name], name


def test_a_stack_without_ctf_stops_with_the_cause(toy, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "--particles",
        str(toy["star"].with_suffix(".mrcs")),
        "-o",
        str(out),
        "--config",
        str(toy["cfg"]),
        "--epochs",
        "1",
        "--apix",
        "6",
        "--no-invert",
    ]
    code, errors = _cli(args, capsys)
    assert code == 2 and len(errors) == 1 and "no CTF parameters" in errors[0], errors
    assert not (out / "map.mrc").exists() and not (out / "checkpoints").exists()


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_live_run_on_the_folder_is_refused(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        _refused(["-o", str(out), "--resume"], capsys, out, "another cryospin run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, errors = _cli(["-o", str(out), "--resume"], capsys)  # the holder died: no stale lock
    assert code == 0 and not errors


def test_device_and_out_errors_are_one_line(toy, tmp_path, capsys):
    for device, needle in (("tpu", "'device'"), ("cuda:99", "cuda:99")):
        code, errors = _cli(_base(toy, tmp_path / "d", "--device", device), capsys)
        assert code == 2 and len(errors) == 1 and needle in errors[0], errors
        assert not (tmp_path / "d" / "config.yaml").exists()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, errors = _cli(_base(toy, blocker / "sub"), capsys)
    assert code == 2 and len(errors) == 1 and "--out" in errors[0] and "afile" in errors[0]
    assert blocker.read_text() == "x"
