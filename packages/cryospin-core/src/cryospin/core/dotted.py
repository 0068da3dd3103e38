"""Dotted keys of a configuration: ``--set KEY=VALUE`` parsing and nested assignment.

A dotted key (``encoder_config.n_heads``) addresses a nested mapping of a run configuration (or of
a grid's simulate block): ``cryospin run --set`` and the grid files (``cryospin grid``) use them.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from cryospin.core.errors import ConfigError


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["epochs=1", "encoder_config.channels=[4, 8]"]`` -> ``{dotted key: YAML value}``.

    Raises:
        ConfigError: an item without ``=`` or a key, or a value that is not valid YAML.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``data[a][b] = value`` for ``key = "a.b"``; a nested mapping value is merged in.

    Raises:
        ConfigError: a prefix of ``key`` holds a non-mapping (the message starts with ``where``).
    """
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            head = ".".join(parts[: i + 1])
            raise ConfigError(f"{where}: key '{key}': '{head}' is not a mapping")
        node = nxt
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for k, v in value.items():
            set_dotted(node[last], k, v, where)
    else:
        node[last] = copy.deepcopy(value)


def has_dotted(data: dict[str, Any], key: str) -> bool:
    """Whether ``key`` (dotted) is present in ``data``."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
