"""Plugin hook specifications (pluggy), in the ``register(name, obj)`` callback style.

A plugin is a module named by an entry point in the ``cryospin`` group, e.g. in its
``pyproject.toml``::

    [project.entry-points.cryospin]
    my_plugin = "my_package.plugin"

whose functions are decorated with :data:`hookimpl` and named after the hooks below. Each hook is
called once, when the registry is first built (:func:`cryospin.core.registry.get_registry`), with a
``register`` callback; the plugin calls it once per component it provides. Names must be unique
within a kind across all plugins: a duplicate raises :class:`cryospin.core.registry.PluginError`
naming both distributions. A module function whose name starts with ``register_`` but matches no
hook below is rejected (pluggy ``check_pending``), so a misspelled hook fails loudly.

Source: the hookspec pattern of simonw/llm (``llm/hookspecs.py``), adapted to component kinds.
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
    """Register encoder classes: ``register(name, cls)``.

    ``cls`` subclasses :class:`cryospin.core.interfaces.Encoder` and declares a pydantic ``Config``.
    Called once when the registry is built. Returns nothing.
    """


@hookspec
def register_decoders(register: Register) -> None:
    """Register decoder classes: ``register(name, cls)``.

    ``cls`` subclasses :class:`cryospin.core.interfaces.Decoder` and declares a pydantic ``Config``.
    Called once when the registry is built. Returns nothing.
    """


@hookspec
def register_pose_stages(register: Register) -> None:
    """Register pose-inference stages: ``register(name, cls)``.

    ``cls`` subclasses :class:`cryospin.core.interfaces.PoseStage` (e.g. ``amortized``, ``direct``).
    Called once when the registry is built. Returns nothing.
    """


@hookspec
def register_image_sources(register: Register) -> None:
    """Register particle-stack readers/writers: ``register(name, obj)``.

    ``obj`` is an instance of :class:`cryospin.core.interfaces.ImageSource`; its ``suffixes``
    (e.g. ``(".star",)``) decide which files it opens. Called once when the registry is built.
    Returns nothing.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``cryospin`` click group: ``cli.add_command(command)``.

    Called once when the command-line interface starts, before arguments are parsed.
    Returns nothing.
    """
