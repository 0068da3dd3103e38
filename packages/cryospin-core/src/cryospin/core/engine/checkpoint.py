"""Atomic checkpoints and the SIGINT/SIGTERM guard.

A checkpoint is one ``torch.save`` file written to a temporary name in the same folder and moved
over the old one with :func:`os.replace`, so a kill at any moment leaves either the old or the new
checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from cryospin.core.errors import InputError

CHECKPOINT_NAME = "last.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}".splitlines()[0]) from None


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
