"""Atomic writers for a run's evaluation files: ``fsc.csv``, ``summary.json``, any file.

Every writer writes a temporary file in the destination folder and then moves it over the
destination with :func:`os.replace` (atomic on POSIX and Windows within one file system), so a
reader, or a run killed mid-write, sees either the old file or the complete new one, never a
partial file. Parent folders are created.

``fsc.csv`` columns: ``shell, frequency_per_A, resolution_A, fsc`` and then any extra named
curves (e.g. ``fsc_masked``); ``resolution_A = 1 / frequency_per_A`` (``inf`` for shell 0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from cryospin.core.evaluation.arrays import as_numpy

__all__ = [
    "FSC_COLUMNS",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_fsc_csv",
    "to_jsonable",
    "write_fsc_csv",
    "write_summary_json",
]

FSC_COLUMNS = ("shell", "frequency_per_A", "resolution_A", "fsc")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and dataclass-like objects for JSON.

    Non-finite floats become ``None`` (JSON has no NaN/inf).
    """
    if hasattr(obj, "detach"):
        obj = as_numpy(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return obj


def write_summary_json(path: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as indented JSON (:func:`to_jsonable`), atomically; returns the path."""
    text = json.dumps(to_jsonable(summary), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def write_fsc_csv(
    path: str | os.PathLike[str],
    frequency_per_A: Any,
    fsc: Any,
    extra_columns: Mapping[str, Any] | None = None,
) -> Path:
    """Write an FSC curve (and optional extra curves on the same shells) to CSV, atomically.

    Args:
        path: destination, e.g. ``run/fsc.csv``.
        frequency_per_A: ``(n,)`` shell frequencies in 1/Å (shell ``s`` at ``s / (D apix)``).
        fsc: ``(n,)`` FSC values.
        extra_columns: ``{name: (n,) values}`` appended after the four standard columns.

    Values are written with ``repr`` precision (they parse back exactly); the resolution of
    shell 0 is ``inf``.
    """
    freq = as_numpy(frequency_per_A, np.float64).reshape(-1)
    curve = as_numpy(fsc, np.float64).reshape(-1)
    extras = {k: as_numpy(v, np.float64).reshape(-1) for k, v in (extra_columns or {}).items()}
    for name, arr in {"fsc": curve, **extras}.items():
        if arr.shape != freq.shape:
            raise ValueError(f"column {name!r} has {arr.size} values, expected {freq.size}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*FSC_COLUMNS, *extras])
    for i, f in enumerate(freq):
        res = 1.0 / f if f > 0 else math.inf
        w.writerow(
            [
                i,
                repr(float(f)),
                repr(float(res)),
                repr(float(curve[i])),
                *(repr(float(v[i])) for v in extras.values()),
            ]
        )
    return atomic_write_text(path, buf.getvalue())


def read_fsc_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a file written by :func:`write_fsc_csv`: ``{column: values}`` (``shell`` as int)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        vals = [r[j] for r in body]
        out[name] = (
            np.array([int(v) for v in vals])
            if name == "shell"
            else np.array([float(v) for v in vals], dtype=np.float64)
        )
    return out
