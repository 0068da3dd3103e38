"""Labels of grid points: axis values as text (:func:`format_value`), folder names (:func:`slug`).

Dotted keys (``encoder_config.n_heads``) and ``--set`` parsing are core's
(:mod:`cryospin.core.dotted`), shared with ``cryospin run --set``.
"""

from __future__ import annotations

import json
import re
from typing import Any


def format_value(value: Any) -> str:
    """Return a compact text form of an axis value (labels, tables)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def slug(text: str) -> str:
    """Make ``text`` a safe folder name (keeps letters, digits and ``._=+-``)."""
    out = re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-")
    return out[:120] or "point"
