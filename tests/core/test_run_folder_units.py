"""Run-folder building blocks: umask-honouring atomic writes, stale temp files, torn metrics
lines, the folder lock, the particle fingerprint, config comparison, --device, the non-finite loss
cause."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cryospin.core.atomic import atomic_write_text, current_umask, remove_stale_temp_files
from cryospin.core.engine.config import validate_config
from cryospin.core.engine.metrics_log import MetricsLog
from cryospin.core.engine.nonfinite import NonFiniteLoss, check_loss, likely_cause
from cryospin.core.errors import ConfigError, InputError
from cryospin.core.particles import CTFParams
from cryospin.core.run.folder import (
    RunLock,
    check_device,
    compare_config,
    particle_fingerprint,
)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_files_get_the_mode_a_plain_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:  # the reference: what open() creates
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~umask


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    keep = [
        tmp_path / "map.mrc",
        tmp_path / ".lock",
        tmp_path / "checkpoints" / "last.pt",
        tmp_path / "notes.tmp",
        tmp_path / "a" / "b" / "c" / ".x.y.tmp.pt",
    ]
    stale = [
        tmp_path / ".map.mrc.k2j3.tmp.mrc",
        tmp_path / "checkpoints" / ".last.pt.a1.tmp.pt",
        tmp_path / "half1" / "checkpoints" / ".last.pt.zz.tmp.pt",
    ]
    for p in keep + stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_metrics_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, {"half": 1})
    log.append({"epoch": 0, "loss": 1.0})
    with path.open("a") as fh:
        fh.write('{"half": 1, "epoch": 1, "lo')  # a kill mid-append
    assert [r["epoch"] for r in log.records()] == [0]
    log.append({"epoch": 1, "loss": 0.5})  # ends the torn line first
    assert [r["epoch"] for r in log.records()] == [0, 1]
    log.trim(1)  # a resume from epoch 1: keeps epoch 0, drops the torn line
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"half": 1, "epoch": 0, "loss": 1.0}]


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_refuses_a_live_holder_and_not_a_dead_one(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match="another cryospin run"):
            RunLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: the lock file stays behind
        proc.wait()
    assert (tmp_path / ".lock").exists()
    lock = RunLock(tmp_path)
    lock.acquire()  # the kernel released the dead holder's lock
    with pytest.raises(InputError):
        RunLock(tmp_path).acquire()  # a second run in this very process is refused too
    lock.release()
    again = RunLock(tmp_path)
    again.acquire()
    again.release()


class _Images:
    def __init__(self, arr):
        self.arr = arr

    def __len__(self):
        return len(self.arr)

    def read(self, idx):
        return self.arr[np.asarray(idx)]


class _Stack:
    def __init__(self, n=20, box=8, seed=0, ac=0.1):
        rng = np.random.default_rng(seed)
        self.path = Path("p.star")
        self.images = _Images(rng.normal(size=(n, box, box)).astype(np.float32))
        self.box, self.pixel_size_A, self.extra = box, 2.0, {}
        self.ctf = CTFParams(*(np.full(n, v, dtype=float) for v in (1e4, 9e3, 10, 300, 2, ac, 0)))

    def __len__(self):
        return len(self.images)

    def require_box(self):
        return self.box


def test_fingerprint_changes_with_the_particles_and_only_with_them():
    base = particle_fingerprint(_Stack())
    assert particle_fingerprint(_Stack()) == base
    assert particle_fingerprint(_Stack(n=19))["n_particles"] == 19
    assert particle_fingerprint(_Stack(seed=1))["images_sha256"] != base["images_sha256"]
    other_ctf = particle_fingerprint(_Stack(ac=0.07))
    assert other_ctf["ctf_sha256"] != base["ctf_sha256"]
    assert other_ctf["images_sha256"] == base["images_sha256"]
    last = _Stack()
    last.images.arr[-1, 0, 0] += 1  # the last image is always in the sample
    assert particle_fingerprint(last)["images_sha256"] != base["images_sha256"]


def test_compare_config_allows_only_resumable_changes(tmp_path):
    saved = validate_config({"particles": "a.star", "epochs": 3}).model_dump(mode="json")
    ok = validate_config(
        {
            "particles": "/moved/a.star",
            "epochs": 5,
            "max_steps": 2,
            "num_threads": 1,
            "progress": False,
        }
    )
    compare_config(saved, ok, tmp_path)
    for change, field in (
        ({"shifts": True}, "shifts"),
        ({"decoder": "mlp"}, "decoder"),
        ({"seed": 4}, "seed"),
        ({"encoder_config": {"n_heads": 2}}, "encoder_config"),
    ):
        cfg = validate_config({"particles": "a.star", "epochs": 3, **change})
        with pytest.raises(ConfigError, match=f"'{field}' differs"):
            compare_config(saved, cfg, tmp_path)
    with pytest.raises(ConfigError, match="'epochs' can only grow"):
        compare_config(saved, validate_config({"particles": "a.star", "epochs": 2}), tmp_path)
    scheduled = validate_config({"particles": "a.star"}).model_dump(mode="json")
    assert scheduled["epochs"] is None  # epochs from the work schedule: any --epochs may follow
    compare_config(scheduled, validate_config({"particles": "a.star", "epochs": 2}), tmp_path)


def test_device_names_are_checked():
    check_device("cpu")
    check_device("auto")
    for bad in ("tpu", "cuda:x", "gpu", ""):
        with pytest.raises(ConfigError, match="device"):
            check_device(bad)
    with pytest.raises(ConfigError, match="cuda:99"):
        check_device("cuda:99")  # no CUDA here, or fewer than 100 GPUs
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda")


class _Data:
    def __init__(self, stack):
        self.stack, self.indices, self.noise_std = stack, np.arange(len(stack)), 1.0

    def images(self, idx):
        return torch.as_tensor(self.stack.images.read(idx))


def test_likely_cause_names_the_bad_parameter():
    assert "amplitude contrast" in likely_cause(_Data(_Stack(ac=7.0)))
    missing = _Stack()
    missing.ctf.defocus_u_A[3] = np.nan
    assert "defocus U" in likely_cause(_Data(missing)) and "missing" in likely_cause(_Data(missing))
    bare = _Stack()
    for values in vars(bare.ctf).values():
        if values is not None:
            values[:] = np.nan
    assert "no CTF parameters" in likely_cause(_Data(bare))
    bad_pixels = _Stack()
    bad_pixels.images.arr[0, 1, 1] = np.inf
    assert "images" in likely_cause(_Data(bad_pixels))
    assert "learning rates" in likely_cause(_Data(_Stack()))
    check_loss(1.5, _Data(_Stack()), 0, 0, "amortized")  # finite: nothing happens
    with pytest.raises(NonFiniteLoss) as exc:
        check_loss(float("nan"), _Data(_Stack(ac=7.0)), 2, 5, "direct")
    msg = str(exc.value)
    assert "epoch 2, step 5" in msg and "amplitude contrast" in msg and len(msg.splitlines()) == 1


def test_lock_file_is_not_left_locked_after_a_finished_process(tmp_path):
    code = (
        "import sys; from cryospin.core.run.folder import RunLock; RunLock(sys.argv[1]).acquire()"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    t0 = time.perf_counter()
    lock = RunLock(tmp_path)
    lock.acquire()  # process exit released it: no stale lock
    lock.release()
    assert time.perf_counter() - t0 < 5


def test_a_full_disk_during_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    import errno
    import shutil as shutil_mod

    from cryospin.core.engine import checkpoint
    from cryospin.core.run.folder import out_errors

    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save_atomic({"epoch": 1}, path)
    old = path.read_bytes()

    def torn_save(state, fh):  # what torch.save does when the disk fills mid-write
        fh.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(checkpoint.torch, "save", torn_save)
    full = SimpleNamespace(total=1 << 30, used=1 << 30, free=0)
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda p: full)
    with pytest.raises(OSError) as exc:
        checkpoint.save_atomic({"epoch": 2}, path)
    assert exc.value.errno == errno.ENOSPC
    assert path.read_bytes() == old and list(path.parent.iterdir()) == [path]
    with pytest.raises(InputError) as one_line, out_errors(tmp_path):
        checkpoint.save_atomic({"epoch": 2}, path)
    assert "No space left on device" in str(one_line.value) and str(tmp_path) in str(one_line.value)


def test_out_errors_convert_only_errors_in_the_run_folder(tmp_path, monkeypatch):
    import errno

    from cryospin.core.run.folder import out_errors

    monkeypatch.chdir(tmp_path)
    inside = OSError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "map.mrc"))
    with pytest.raises(InputError, match=r"--out run: cannot write .*Permission denied"):
        with out_errors(Path("run")):  # relative --out, absolute file name
            raise inside
    elsewhere = FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "particles.star"))
    with pytest.raises(FileNotFoundError), out_errors(Path("run")):
        raise elsewhere
