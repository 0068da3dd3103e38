"""The run's event log: ``run.log`` in the output folder, the terminal, optional TensorBoard.

Every event of a run (start, inputs, contrast, each epoch, warnings, stop, the final numbers) is
reported once through :func:`event` to the logger ``cryospin.run``. Inside :func:`run_log` (what
``cryospin run`` uses) the event goes to

* ``OUT/run.log``, appended: one line per event, ``<ISO 8601 local time with UTC offset> <text>``,
  newlines folded, never wrapped;
* the terminal (stderr), unless the event is already shown there (``on_terminal=False``: the epoch
  lines, which the progress display prints, :mod:`cryospin.core.engine.progress`);
* with ``tensorboard``, the numbers of an event's ``metrics`` (the epoch records of
  ``metrics.jsonl``) as TensorBoard scalars in ``OUT/tensorboard`` (``half1/loss``... for
  half-sets), step = epoch.

Python warnings raised during the run (e.g. by the particle-file readers) become one-line events
``warning: <message>``. Outside :func:`run_log` events go nowhere (the logger has no handler).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cryospin.core.errors import ConfigError

LOGGER = logging.getLogger("cryospin.run")
LOG_NAME = "run.log"
TENSORBOARD_DIR = "tensorboard"


def event(text: str, *, metrics: dict[str, Any] | None = None, on_terminal: bool = True) -> None:
    """Report one event of the run (one line; see the module docstring)."""
    line = " ".join(str(text).split("\n"))
    LOGGER.info(line, extra={"metrics": metrics, "on_terminal": on_terminal})


class _TimeFormatter(logging.Formatter):
    """``<ISO 8601 local time, seconds, UTC offset> <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")
        return f"{stamp} {record.getMessage()}"


class _TerminalHandler(logging.Handler):
    """Echo events to stderr, except those the progress display already shows."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "on_terminal", True):
            click.echo(record.getMessage(), err=True)


class _TensorBoardHandler(logging.Handler):
    """Write the numeric fields of events' ``metrics`` as scalars with a ``SummaryWriter``."""

    SKIP = ("epoch", "half", "step")

    def __init__(self, writer: Any) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        rec = getattr(record, "metrics", None)
        if not rec or "epoch" not in rec:
            return
        prefix = f"half{rec['half']}/" if "half" in rec else ""
        for key, value in rec.items():
            if key in self.SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", float(value), int(rec["epoch"]) + 1)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        super().close()


def tensorboard_writer(logdir: Path) -> Any:
    """Return a ``torch.utils.tensorboard.SummaryWriter`` writing to ``logdir``.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed (one line saying how to get it).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install tensorboard "
            "(or pip install 'cryospin[tensorboard]')"
        ) from None
    return SummaryWriter(log_dir=str(logdir))


@contextmanager
def run_log(out: Path, tensorboard: bool = False, terminal: bool = True) -> Iterator[None]:
    """Send the run's events to ``out/run.log``, the terminal and (optionally) TensorBoard.

    Raises:
        ConfigError: ``tensorboard`` without the tensorboard package (before anything is written).
    """
    out = Path(out)
    writer = tensorboard_writer(out / TENSORBOARD_DIR) if tensorboard else None
    out.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(out / LOG_NAME, encoding="utf-8")]
    handlers[0].setFormatter(_TimeFormatter())
    if terminal:
        handlers.append(_TerminalHandler())
    if writer is not None:
        handlers.append(_TensorBoardHandler(writer))
    saved = (LOGGER.level, LOGGER.propagate, warnings.showwarning)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    for h in handlers:
        LOGGER.addHandler(h)

    def show(message: Any, *args: Any, **kwargs: Any) -> None:
        event(f"warning: {message}")

    warnings.showwarning = show
    try:
        yield
    finally:
        for h in handlers:
            LOGGER.removeHandler(h)
            h.close()
        LOGGER.setLevel(saved[0])
        LOGGER.propagate = saved[1]
        warnings.showwarning = saved[2]
