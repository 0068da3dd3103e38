"""Checkpoints: the trainer's state format, atomic files, and the SIGINT/SIGTERM guard.

A checkpoint is one ``torch.save`` file written through :func:`cryospin.core.atomic.atomic_path`
(temporary name in the same folder, fsync, :func:`os.replace` over the old one), so a kill at any
moment leaves either the old or the new checkpoint, never a torn one.

Format (:data:`CHECKPOINT_VERSION`), the same for one process and several:
:meth:`.trainer.Trainer.state_dict` lists every key of ``last.pt``; each process's per-particle
rows live in its shard file (:func:`cryospin.core.engine.sharding.save_checkpoint`). Format 1
(before the one trainer: a one-process ``last.pt`` held every row) is not read.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from cryospin.core.atomic import atomic_path
from cryospin.core.errors import InputError

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_VERSION = 2


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` with ``torch.save``, atomically (fsync before the rename).

    Raises:
        OSError: ``ENOSPC`` naming ``path`` when the disk filled up (``torch.save`` reports that
            as an obscure ``RuntimeError``); the previous checkpoint is kept.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(state, fh)
            fh.flush()
        except RuntimeError:
            if shutil.disk_usage(tmp.parent).free >= 1 << 20:
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        os.fsync(fh.fileno())


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`, never running code from the file.

    ``torch.load(weights_only=True)``: tensors, plain containers, numbers, strings and (through
    :func:`cryospin.core.safe_pickle.numpy_array_globals`) numpy arrays; anything else - a
    crafted file naming ``os.system``, a foreign pickle - is refused before it is called.

    Raises:
        InputError: unreadable, torn, not a checkpoint, or holding other objects (one line).
    """
    from cryospin.core.safe_pickle import numpy_array_globals

    allow = getattr(torch.serialization, "safe_globals", None)
    if allow is None:  # torch < 2.5: no scoped allow-list
        raise InputError("loading checkpoints safely needs torch >= 2.5")
    try:
        with allow(numpy_array_globals()):
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = _culprit(str(exc))
        if culprit is None:  # not a refused object: a damaged or foreign file
            raise InputError(f"cannot read checkpoint {path}: not a valid checkpoint") from None
        raise InputError(
            f"checkpoint {path} holds objects other than tensors, arrays and plain data "
            f"({culprit}); refused to load it (loading could run code)"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}".splitlines()[0]) from None
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {path} is not a cryospin checkpoint (no state dictionary)")
    return state


def check_format(state: dict[str, Any], path: Path) -> None:
    """Refuse a ``last.pt`` (``state``, read from ``path``) of another format than this one's.

    Raises:
        InputError: its ``version`` is not :data:`CHECKPOINT_VERSION` (one line).
    """
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"checkpoint {path} has format {state.get('version')}, this cryospin reads format "
            f"{CHECKPOINT_VERSION}: start the run anew (--overwrite)"
        )


def check_loadable(path: Path) -> None:
    """Refuse ``path`` now, before it is loaded for training, when it would be refused then.

    First reads only the names of the objects the pickle refers to
    (``torch.serialization.get_unsafe_globals_in_checkpoint``; nothing is called), so a
    ``--resume`` can reject a crafted or damaged checkpoint before it changes anything on disk
    (without that function, torch < 2.6, :func:`load` still refuses); then a ``last.pt`` is
    loaded (:func:`load`) and its format checked (:func:`check_format`).

    Raises:
        InputError: not a checkpoint, it names an object outside the allow-list, or it is a
            ``last.pt`` of another format (one line).
    """
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is not None:
        _check_globals(Path(path), scan)
    if Path(path).name == CHECKPOINT_NAME:
        check_format(load(path), path)


def _check_globals(path: Path, scan: Any) -> None:
    """Refuse ``path`` if its pickle names an object outside the allow-list.

    ``scan`` is ``torch.serialization.get_unsafe_globals_in_checkpoint`` (nothing is called).
    """
    from cryospin.core.safe_pickle import numpy_array_globals

    def norm(name: str) -> str:
        return name.replace("numpy.core.", "numpy._core.")

    allowed = {norm(f"{o.__module__}.{o.__qualname__}") for o in numpy_array_globals()}
    try:
        names = scan(path)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):
        raise InputError(f"cannot read checkpoint {path}: not a valid checkpoint") from None
    bad = [n for n in names if norm(n) not in allowed]
    if bad:
        raise InputError(
            f"checkpoint {path} holds objects other than tensors, arrays and plain data "
            f"(GLOBAL {bad[0]}); refused to load it (loading could run code)"
        )


def _culprit(message: str) -> str | None:
    """Return the object ``torch.load(weights_only=True)`` refused (``None``: none was named)."""
    for line in message.splitlines():
        if "GLOBAL" in line or "got <" in line:
            return line.split("error:")[-1].strip().rstrip(".")[:200]
    return None


class StopRequested(Exception):
    """Raised by the trainer after it checkpointed because of a signal or ``max_steps``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignalGuard:
    """Context manager: SIGINT/SIGTERM set :attr:`requested` instead of killing the process.

    The trainer polls it after each step, checkpoints and stops. A second signal of the same kind
    falls through to the previous handler (so a stuck run can still be killed).
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            old = self._old.get(signum)
            if callable(old):
                old(signum, frame)
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
