"""``metrics.jsonl``: one JSON record per trainer and epoch, shared by the trainers of a run.

Each record carries the trainer's ``tag`` (e.g. ``{"half": 2}``), so the two half-set trainers
write to the same file and each reads back only its own records. A resumed trainer first drops its
records of the epochs it is about to redo (those at or after its checkpoint's epoch).

Crash safety: an append is one ``write`` followed by ``fsync``; a kill mid-append can leave a
partial last line. Readers skip lines that are not JSON records, an append first ends such a line,
and :meth:`MetricsLog.trim` (run at every start) rewrites the file atomically without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryospin.core.atomic import atomic_write_text


class MetricsLog:
    """The records of one trainer (``tag``) in the JSON-lines file ``path``.

    ``writer=False`` (every process of a multi-process run but rank 0) makes every method a no-op
    and :meth:`records` empty: one process owns the file.
    """

    def __init__(self, path: Path, tag: dict[str, Any], writer: bool = True) -> None:
        self.path = Path(path)
        self.tag = dict(tag)
        self.writer = writer

    def _mine(self, rec: dict[str, Any]) -> bool:
        return all(rec.get(k) == v for k, v in self.tag.items())

    def append(self, record: dict[str, Any]) -> None:
        """Append ``{**tag, **record}`` as one line and fsync it.

        A partial last line left by a killed writer is ended first, so it cannot swallow the
        new record.
        """
        if not self.writer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**self.tag, **record}) + "\n"
        with self.path.open("ab") as fh:
            if fh.tell() > 0 and not _ends_with_newline(self.path):
                line = "\n" + line
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())

    def trim(self, epoch: int) -> None:
        """Drop this trainer's records of epochs ``>= epoch`` and any torn line (atomic rewrite)."""
        if not self.writer or not self.path.exists():
            return
        keep = [
            json.dumps(rec)
            for rec in _read(self.path)
            if not self._mine(rec) or rec.get("epoch", -1) < epoch
        ]
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def records(self) -> list[dict[str, Any]]:
        """Return this trainer's records, oldest first (torn lines skipped)."""
        if not self.writer or not self.path.exists():
            return []
        return [r for r in _read(self.path) if self._mine(r)]


def _ends_with_newline(path: Path) -> bool:
    """Whether the non-empty file ``path`` ends with a newline byte."""
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _read(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` that parses as a JSON object; others (torn appends) are skipped."""
    recs = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            recs.append(rec)
    return recs
