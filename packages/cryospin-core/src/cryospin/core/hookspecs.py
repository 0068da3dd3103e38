"""Plugin hooks (pluggy), one per kind of component.

A plugin is a module named by a ``cryospin`` entry point::

    [project.entry-points.cryospin]
    my_plugin = "my_package.plugin"

whose ``@hookimpl`` functions call ``register(name, obj)`` once per component. What each kind
of component must be is declared in :mod:`cryospin.core.interfaces` and enforced when the
registry is built (:mod:`cryospin.core.registry`). Source: simonw/llm's ``hookspecs.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "cryospin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Any], None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder classes (:class:`~cryospin.core.interfaces.Encoder` subclasses)."""


@hookspec
def register_decoders(register: Register) -> None:
    """Register decoder classes (:class:`~cryospin.core.interfaces.Decoder` subclasses)."""


@hookspec
def register_pose_stages(register: Register) -> None:
    """Register pose-stage classes (:class:`~cryospin.core.interfaces.PoseStage` subclasses)."""


@hookspec
def register_image_sources(register: Register) -> None:
    """Register image sources (:class:`~cryospin.core.interfaces.ImageSource` instances)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``cryospin`` click group: ``cli.add_command(command)``."""
