"""The run folder contract of ``cryospin run --out OUT``.

* One live run per folder: the run holds an exclusive :func:`fcntl.flock` on ``OUT/.lock`` until it
  exits; the kernel drops it when the process dies, so a crash leaves no stale lock.
* ``OUT/run.json`` (the manifest) records the resolved configuration and a fingerprint of the
  particle set (:func:`particle_fingerprint`).
* A new run refuses a folder that holds another run unless ``overwrite`` is given (then the old
  run's files are removed first).
* ``--resume`` checks, before anything on disk changes: ``config.yaml`` present and complete, every
  setting that shapes the result unchanged (:data:`RESUME_MAY_CHANGE` lists those that may
  change), ``epochs`` not lower, and the particle set's fingerprint unchanged. Without a
  checkpoint it starts afresh and reports so (never ``resumed: true``).
* Temporary files of a killed writer (:func:`cryospin.core.atomic.remove_stale_temp_files`) are
  removed on the next start.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cryospin.core.atomic import atomic_write_text, remove_stale_temp_files
from cryospin.core.engine.checkpoint import check_loadable
from cryospin.core.engine.config import RunConfig, save_yaml
from cryospin.core.errors import ConfigError, InputError

LOCK_NAME = ".lock"
MANIFEST_NAME = "run.json"
MANIFEST_VERSION = 1
#: settings a ``--resume`` may change: stopping, speed, reporting (``epochs`` may only grow)
RESUME_MAY_CHANGE = frozenset(
    {
        "epochs",
        "max_steps",
        "progress",
        "num_threads",
        "device",
        "cache_images",
        "eval_every",
        "deterministic",
        "tensorboard",
        "gt_map",
    }
)
#: fields every config.yaml holds (the manifest's list is used when there is one)
CORE_FIELDS = (
    "particles",
    "encoder",
    "decoder",
    "epochs",
    "batch_size",
    "seed",
    "shifts",
    "half_sets",
    "stage_schedule",
    "device",
)
#: file locations: what they point to is checked through the particle fingerprint instead
PATH_FIELDS = frozenset({"particles", "datadir", "stack", "ind"})
#: files and folders a run writes in OUT (removed by ``overwrite``)
RUN_FILES = (
    "config.yaml",
    MANIFEST_NAME,
    "metrics.jsonl",
    "summary.json",
    "map.mrc",
    "map_half1.mrc",
    "map_half2.mrc",
    "poses.star",
    "poses.cs",
    "poses.pkl",
    "fsc.csv",
    "fsc.png",
    "orientations.png",
    "head_usage.png",
)
RUN_DIRS = ("checkpoints", "half1", "half2")  # run.log, tensorboard/: open already (run_log)
CHECKPOINT_DIRS = ("checkpoints", "half1/checkpoints", "half2/checkpoints")
#: images hashed for the fingerprint (evenly spaced, first and last included)
FINGERPRINT_IMAGES = 8


def particle_fingerprint(stack: Any) -> dict[str, Any]:
    """Return what identifies a particle set: count, box, pixel size and two SHA-256 digests.

    ``ctf_sha256`` covers every particle's CTF parameters (float64 bytes, in particle order);
    ``images_sha256`` covers the pixels (float32 bytes) of up to :data:`FINGERPRINT_IMAGES`
    evenly spaced images, the first and last included. Nothing depends on where the files lie:
    ``particles`` (the file's resolved path) is informative only, so a moved but identical
    particle set still matches.
    """
    n = len(stack)
    ctf = hashlib.sha256()
    for value in vars(stack.ctf).values():
        if value is not None:
            ctf.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
    pick = np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_IMAGES)).round().astype(np.int64))
    pixels = np.ascontiguousarray(stack.images.read(pick), dtype=np.float32)
    return {
        "particles": str(Path(stack.path).resolve()),
        "n_particles": n,
        "box": int(stack.require_box()),
        "pixel_size_A": round(float(stack.pixel_size_A), 6),
        "ctf_sha256": ctf.hexdigest(),
        "images_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
    }


def check_device(device: str) -> None:
    """Accept ``cpu``, ``auto``, ``cuda`` or ``cuda:K`` when CUDA (and GPU K) is there.

    Raises:
        ConfigError: any other name, or CUDA asked for where torch sees no GPU (one line).
    """
    import torch

    kind, _, index = device.partition(":")
    if device in ("cpu", "auto"):
        return
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(
            f"invalid config field 'device': expected cpu, cuda, cuda:K or auto (got {device!r})"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
            f"{torch.cuda.device_count()} GPUs); use --device cpu"
        )
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPUs are visible")


@contextlib.contextmanager
def out_errors(out: Path) -> Iterator[None]:
    """Turn an OS error on the output folder into a one-line :class:`InputError`.

    Covers permissions, a file in the way and a full disk (errors naming a path in ``out``, or
    ENOSPC/EDQUOT/EROFS); other OS errors pass through.
    """
    try:
        yield
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else None
        root = Path(os.path.abspath(out))
        full = Path(os.path.abspath(where)) if where is not None else None
        ours = full is not None and (full == root or root in full.parents)
        if not (ours or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
            raise
        what = f"{exc.strerror or exc}" + (f": {where}" if where is not None else "")
        raise InputError(f"--out {out}: cannot write the run folder ({what})") from None


class RunLock:
    """An exclusive, non-blocking :func:`fcntl.flock` on ``OUT/.lock`` (no-op without fcntl)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raises :class:`InputError` when another live process holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(
                f"--out {self.path.parent}: another cryospin run is using this folder (it holds "
                f"{self.path}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it would race with a waiting run)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def checkpoints(out: Path) -> list[Path]:
    """Return the checkpoints (``last.pt``) present in the run folder ``out``."""
    return [p for d in CHECKPOINT_DIRS if (p := Path(out) / d / "last.pt").is_file()]


def run_contents(out: Path) -> list[str]:
    """Return the names of the run files and folders present in ``out`` (empty: no run)."""
    return [name for name in (*RUN_FILES, *RUN_DIRS) if (Path(out) / name).exists()]


def _note(message: str) -> None:
    """Report ``message`` as a run event (terminal and run.log), or on stderr outside a run log."""
    from cryospin.core.engine.run_log import LOGGER, event

    if LOGGER.handlers:
        event(f"note: {message}")
    else:
        sys.stderr.write(f"note: {message}\n")


def _differs(field: str, before: Any, now: Any, out: Path) -> ConfigError:
    return ConfigError(f"--resume: '{field}' differs from the run in {out} ({before!r} vs {now!r})")


def compare_config(saved: dict[str, Any], cfg: RunConfig, out: Path) -> None:
    """Raise :class:`ConfigError` naming the first setting a ``--resume`` may not change."""
    now = cfg.model_dump(mode="json")
    for field, value in now.items():
        if field in PATH_FIELDS or field not in saved:
            continue
        both_set = isinstance(value, int) and isinstance(saved[field], int)
        if field == "epochs" and both_set and value < saved[field]:  # None: from the schedule
            raise ConfigError(
                f"--resume: 'epochs' can only grow (the run in {out} has {saved[field]}, got "
                f"{value}); start a new run with --overwrite for fewer epochs"
            )
        if field not in RESUME_MAY_CHANGE and value != saved[field]:
            raise _differs(field, saved[field], value, out)


def compare_fingerprint(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """Raise :class:`ConfigError` naming the first fingerprint field that differs."""
    for field, value in now.items():
        if field != "particles" and field in saved and saved[field] != value:
            before, after = (
                (saved[field][:12], value[:12])
                if field.endswith("sha256")
                else (saved[field], value)
            )
            raise ConfigError(
                f"--resume: the particle set differs from the run in {out}: '{field}' "
                f"({before!r} vs {after!r}; the run used {saved.get('particles')})"
            )


def _read_saved_config(out: Path, required: Any) -> dict[str, Any]:
    """``OUT/config.yaml`` as a mapping holding every field in ``required``, else one line."""
    path = out / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--resume: {path} is missing: {out} holds no run to resume")
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--resume: {path} is unreadable ({exc})".splitlines()[0]) from None
    missing = [f for f in required if not isinstance(saved, dict) or f not in saved]
    if missing:
        raise ConfigError(
            f"--resume: {path} is incomplete (no '{missing[0]}'): truncated or edited; "
            "restore it or start a new run with --overwrite"
        )
    return saved


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: {path} is unreadable ({exc})".splitlines()[0]) from None
    if not isinstance(man, dict) or not {"config", "particles"} <= man.keys():
        raise ConfigError(f"--resume: {path} is not a cryospin run manifest")
    return man


def check_resume(out: Path, cfg: RunConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Validate a ``--resume`` of the run in ``out``, reading only; return the fingerprint.

    Checks ``config.yaml``, the settings against it and the manifest, every checkpoint file
    (:func:`~cryospin.core.engine.checkpoint.check_loadable`) and the particle set. The
    fingerprint to record is the manifest's, or ``fingerprint`` for a run without one.

    Raises:
        ConfigError: a missing or incomplete file, or a changed setting or particle set.
        InputError: a checkpoint that is damaged or would be refused by the loader.
    """
    man = _read_manifest(out)
    saved = _read_saved_config(out, CORE_FIELDS if man is None else man["config"].keys())
    compare_config(saved, cfg, out)
    for d in CHECKPOINT_DIRS:  # last.pt and a distributed run's shards; not stale temp files
        for path in sorted((out / d).glob("*.pt")):
            if not path.name.startswith("."):
                check_loadable(path)
    if man is None:
        _note(f"{out} has no {MANIFEST_NAME} (older cryospin): the particle set is not checked")
        return fingerprint
    compare_config(man["config"], cfg, out)
    compare_fingerprint(man["particles"], fingerprint, out)
    return man["particles"]


def _clear_run(out: Path) -> None:
    """Remove the files and folders of a previous run from ``out`` (``--overwrite``)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


@contextlib.contextmanager
def open_run_folder(
    out: Path, cfg: RunConfig, stack: Any, resume: bool, overwrite: bool, writer: bool = True
) -> Iterator[bool]:
    """Check and lock the run folder ``out``; yields whether a checkpoint will be resumed.

    ``writer=False`` (ranks > 0 of a multi-process run) checks, locks and writes nothing. The
    writer takes the lock, validates (:func:`check_resume`, or refuses a folder holding another
    run unless ``overwrite``), and only then removes stale temporary files (and, on a new run,
    the old run's files) and writes ``run.json`` and ``config.yaml``. The lock is held until
    the ``with`` block ends.

    Raises:
        ConfigError: a ``--resume`` mismatch, or a folder holding another run.
        InputError: the folder is locked by a live run, or cannot be written.
    """
    out = Path(out)
    if not writer:
        yield resume and bool(checkpoints(out))
        return
    lock = RunLock(out)
    with out_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        fingerprint = particle_fingerprint(stack)
        if resume:
            fingerprint = check_resume(out, cfg, fingerprint)
        elif (found := run_contents(out)) and not overwrite:
            raise ConfigError(
                f"--out {out} already holds a run ({', '.join(found[:3])}); continue it with "
                "--resume or replace it with --overwrite"
            )
        resumed = resume and bool(checkpoints(out))
        if resume and not resumed:
            _note(f"--resume: no checkpoint in {out}; starting from epoch 0")
        with out_errors(out):
            remove_stale_temp_files(out)
            if not resume:
                _clear_run(out)
            manifest = {
                "version": MANIFEST_VERSION,
                "config": cfg.model_dump(mode="json"),
                "particles": fingerprint,
            }
            atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
            save_yaml(cfg, out / "config.yaml")
        yield resumed
    finally:
        lock.release()
