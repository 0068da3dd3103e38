"""``metrics.jsonl``: one JSON record per trainer and epoch, shared by the trainers of a run.

Each record carries the trainer's ``tag`` (e.g. ``{"half": 2}``), so the two half-set trainers
write to the same file and each reads back only its own records. A resumed trainer first drops its
records of the epochs it is about to redo (those at or after its checkpoint's epoch).
"""

from __future__ import annotations

import json
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
        """Append ``{**tag, **record}`` as one line."""
        if not self.writer:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({**self.tag, **record}) + "\n")

    def trim(self, epoch: int) -> None:
        """Drop this trainer's records of epochs ``>= epoch`` (rewrites the file atomically)."""
        if not self.writer or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            rec = json.loads(line)
            if not self._mine(rec) or rec.get("epoch", -1) < epoch:
                keep.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def records(self) -> list[dict[str, Any]]:
        """Return this trainer's records, oldest first."""
        if not self.writer or not self.path.exists():
            return []
        recs = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        return [r for r in recs if self._mine(r)]
