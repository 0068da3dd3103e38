"""The component registry: loads plugins from the ``cryospin`` entry-point group with pluggy.

Kinds of component: ``encoder``, ``decoder``, ``pose_stage``, ``image_source`` (see
:mod:`cryospin.core.hookspecs`). Built-in distributions (:data:`BUILTIN_DISTRIBUTIONS`) always
load; others load unless the environment variable ``CRYOSPIN_PLUGINS`` is set, in which case only
the comma-separated distribution names it lists load (``CRYOSPIN_PLUGINS=""`` loads none).

Errors: :class:`PluginError` for a duplicate component name (naming both distributions), an
unknown component name (listing the known ones), a plugin module that fails to import, a
misspelled hook (pluggy ``check_pending``), or a ``register_*`` function of a plugin module that
lacks the ``@hookimpl`` marker (pluggy alone would silently ignore it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from cryospin.core import hookspecs
from cryospin.core.errors import CryospinError

KINDS = {
    "encoder": "register_encoders",
    "decoder": "register_decoders",
    "pose_stage": "register_pose_stages",
    "image_source": "register_image_sources",
}
BUILTIN_DISTRIBUTIONS = frozenset(
    {"cryospin-core", "cryospin-io", "cryospin-encoders", "cryospin-decoders"}
)
ENV_VAR = "CRYOSPIN_PLUGINS"


class PluginError(CryospinError):
    """A plugin could not be loaded, or a component name is duplicated or unknown."""


@dataclass(frozen=True)
class Component:
    """One registered component: its kind, name, the object, and the providing distribution."""

    kind: str
    name: str
    obj: Any
    distribution: str
    version: str


@dataclass
class Registry:
    """All registered components, by kind then name, plus the plugin manager that loaded them."""

    manager: pluggy.PluginManager
    components: dict[str, dict[str, Component]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Any:
        """Return the object registered as ``name`` of ``kind``.

        Raises:
            PluginError: no component of that kind has that name (the message lists the known ones).
        """
        found = self.components.get(kind, {})
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise PluginError(f"unknown {kind} '{name}' (registered: {known})")
        return found[name].obj

    def names(self, kind: str) -> list[str]:
        """Sorted names of the registered components of ``kind``."""
        return sorted(self.components.get(kind, {}))

    def add(self, component: Component) -> None:
        """Add ``component``; raises :class:`PluginError` if its kind already has its name."""
        table = self.components.setdefault(component.kind, {})
        if component.name in table:
            other = table[component.name]
            raise PluginError(
                f"{component.kind} '{component.name}' is registered twice: by "
                f"{other.distribution} and by {component.distribution}"
            )
        table[component.name] = component


def _allowed(distribution: str) -> bool:
    if distribution in BUILTIN_DISTRIBUTIONS or ENV_VAR not in os.environ:
        return True
    wanted = {d.strip() for d in os.environ[ENV_VAR].split(",") if d.strip()}
    return distribution in wanted


def _unmarked_hooks(module: Any) -> list[str]:
    """Functions of ``module`` named ``register_*`` that lack the ``hookimpl`` marker."""
    marker = f"{hookspecs.PROJECT}_impl"
    return sorted(
        attr
        for attr, value in vars(module).items()
        if attr.startswith("register_")
        and callable(value)
        and getattr(value, "__module__", None) == getattr(module, "__name__", None)
        and getattr(value, marker, None) is None
    )


def load_plugin_manager() -> pluggy.PluginManager:
    """Build a pluggy manager with every allowed ``cryospin`` entry-point plugin registered.

    Each plugin is registered under the name ``"<distribution>:<entry point>"``.

    Raises:
        PluginError: a plugin module fails to import, or defines a misspelled hook.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for ep in metadata.entry_points(group=hookspecs.PROJECT):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        if not _allowed(dist):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            raise PluginError(
                f"plugin {dist}:{ep.name} ({ep.value}) failed to load: {exc}"
            ) from exc
        name = f"{dist}:{ep.name}"
        unmarked = _unmarked_hooks(module)
        if unmarked:
            raise PluginError(
                f"plugin {name} ({ep.value}) defines {', '.join(unmarked)} without "
                f"@{hookspecs.PROJECT}.core.hookspecs.hookimpl; pluggy would ignore it"
            )
        if pm.get_plugin(name) is None:
            pm.register(module, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        who = pm.get_name(exc.plugin) or "a plugin"
        raise PluginError(f"{who} defines an unknown hook: {exc}") from exc
    return pm


def _distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    name = pm.get_name(plugin) or "unknown:unknown"
    dist = name.split(":", 1)[0]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return dist, version


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every ``register_*`` hook implementation and collect the components it registers.

    Raises:
        PluginError: two plugins register the same name for one kind.
    """
    registry = Registry(manager=pm)
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            dist, version = _distribution_of(pm, impl.plugin)

            def register(name: str, obj: Any, _k: str = kind, _d: str = dist, _v: str = version):
                registry.add(Component(_k, name, obj, _d, _v))

            impl.function(register=register)
    return registry


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """Return the process-wide registry, building it on first use (or when ``refresh`` is true)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry(load_plugin_manager())
    return _REGISTRY
