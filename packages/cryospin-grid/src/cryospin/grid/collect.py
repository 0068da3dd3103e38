"""Collecting a grid folder's runs for the report: manifest, run folders, summaries and epochs.

The runs are those of ``DIR/grid.json`` (written by ``cryospin grid``); without it, every
``runs/<label>/seed<k>/`` folder (or any folder holding a ``summary.json``) counts. Each run's
``summary.json`` and per-epoch ``metrics.jsonl`` records are read as they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryospin.core.errors import InputError
from cryospin.grid.runs import MANIFEST, run_state


@dataclass
class RunRecord:
    """One run folder: its point label, seed, values, state, summary and per-epoch records."""

    label: str
    seed: int | None
    dir: Path
    values: dict[str, Any] = field(default_factory=dict)
    state: str = "new"
    summary: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}".splitlines()[0]) from None


def read_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch records of ``metrics.jsonl`` (half 1's for half-set runs), in epoch order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    recs = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}: line {i} is not JSON") from None
        if rec.get("half", 1) == 1:
            recs.append(rec)
    return sorted(recs, key=lambda r: r.get("epoch", 0))


def _load(rec: RunRecord) -> RunRecord:
    rec.state = run_state(rec.dir)
    if (rec.dir / "summary.json").is_file():
        rec.summary = _read_json(rec.dir / "summary.json")
    rec.epochs = read_epochs(rec.dir)
    return rec


def collect(out: Path) -> tuple[dict[str, Any], list[RunRecord]]:
    """Return ``(manifest, runs)`` of a grid folder (see the module docstring).

    Raises:
        InputError: ``out`` is not a folder or holds no runs.
    """
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"grid folder {out} does not exist")
    if (out / MANIFEST).is_file():
        manifest = _read_json(out / MANIFEST)
        runs = [
            RunRecord(p["label"], p.get("seed"), out / p["dir"], dict(p.get("values") or {}))
            for p in manifest.get("points", [])
        ]
    else:
        manifest = {"name": out.name, "axes": []}
        dirs = sorted(out.glob("runs/*/seed*")) or sorted(
            p.parent for p in out.rglob("summary.json")
        )
        runs = []
        for d in dirs:
            m = re.fullmatch(r"seed(\d+)", d.name)
            label = d.parent.relative_to(out).as_posix() if m else d.relative_to(out).as_posix()
            if label.startswith("runs/"):
                label = label[len("runs/") :]
            runs.append(RunRecord(label, int(m.group(1)) if m else None, d))
    if not runs:
        raise InputError(f"{out} holds no grid runs (no {MANIFEST}, no runs/*/seed*/ folders)")
    return manifest, [_load(r) for r in runs]
