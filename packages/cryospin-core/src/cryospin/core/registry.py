"""The component registry: loads plugins from the ``cryospin`` entry-point group with pluggy.

Kinds of component: ``encoder``, ``decoder``, ``pose_stage``, ``image_source`` (see
:mod:`cryospin.core.hookspecs`). Built-in distributions (:data:`BUILTIN_DISTRIBUTIONS`) always
load; others load unless the environment variable ``CRYOSPIN_PLUGINS`` is set, in which case only
the comma-separated distribution names it lists load (``CRYOSPIN_PLUGINS=""`` loads none).

Errors: :class:`PluginError` for a duplicate component name (naming both distributions), an
unknown component name (listing the known ones), a component that is not what its kind declares
in :mod:`cryospin.core.interfaces` (naming the plugin), a suffix two image sources claim, a plugin
module that fails to import, a misspelled hook (pluggy ``check_pending``), or a ``register_*``
function of a plugin module that lacks the ``@hookimpl`` marker (pluggy alone would silently
ignore it).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from cryospin.core import hookspecs
from cryospin.core.errors import CryospinError, InputError
from cryospin.core.interfaces import ComponentConfig, Decoder, Encoder, ImageSource, PoseStage

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
#: what each kind registers: a concrete subclass (an instance for image sources) of the type
BASES: dict[str, type] = {
    "encoder": Encoder,
    "decoder": Decoder,
    "pose_stage": PoseStage,
    "image_source": ImageSource,
}


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
        """Add ``component``.

        Raises:
            PluginError: its kind already has its name, or (image sources) another source
                claims one of its suffixes; both messages name both distributions.
        """
        table = self.components.setdefault(component.kind, {})
        if component.name in table:
            other = table[component.name]
            raise PluginError(
                f"{component.kind} '{component.name}' is registered twice: by "
                f"{other.distribution} and by {component.distribution}"
            )
        if component.kind == "image_source":
            for other in table.values():
                shared = set(other.obj.suffixes) & set(component.obj.suffixes)
                if shared:
                    raise PluginError(
                        f"image sources '{other.name}' ({other.distribution}) and "
                        f"'{component.name}' ({component.distribution}) both read "
                        f"{', '.join(sorted(shared))} files"
                    )
        table[component.name] = component

    def source_for(self, path: str | Path) -> ImageSource:
        """Return the image source that reads ``path``.

        The one rule: the source with the longest registered suffix that the file's lower-case
        name ends with (suffixes are unique across sources).

        Raises:
            InputError: no source reads the file (the message lists the known suffixes).
        """
        name = Path(path).name.lower()
        sources = [c.obj for c in self.components.get("image_source", {}).values()]
        matches = [(len(s), src) for src in sources for s in src.suffixes if name.endswith(s)]
        if matches:
            return max(matches, key=lambda m: m[0])[1]
        known = ", ".join(sorted(s for src in sources for s in src.suffixes)) or "none"
        suffix = Path(path).suffix.lower() or Path(path).name
        raise InputError(f"{path}: no image source reads '{suffix}' files; known: {known}")

    def provider(self, method: str) -> ImageSource:
        """Return the first image source (by name) providing the optional ``method``.

        Raises:
            CryospinError: no registered source provides it.
        """
        for name in self.names("image_source"):
            source: ImageSource = self.get("image_source", name)
            if source.provides(method):
                return source
        raise CryospinError(f"no installed image source provides {method} (install cryospin-io)")


def check_component(kind: str, name: str, obj: Any, plugin: str) -> None:
    """Check that ``obj`` is what ``kind`` declares (:data:`BASES`), else name the plugin.

    Encoders, decoders and pose stages are concrete subclasses of their base with a ``Config``
    (a :class:`~cryospin.core.interfaces.ComponentConfig`); a pose stage also has a ``name``.
    An image source is an instance of :class:`~cryospin.core.interfaces.ImageSource` whose
    ``suffixes`` are non-empty, lower case and start with a dot.

    Raises:
        PluginError: the message names the plugin, the kind, the name and what is wrong.
    """
    base = BASES[kind]
    what = f"plugin {plugin} registers {kind} '{name}' as {obj!r}"
    if kind == "image_source":
        suffixes = getattr(obj, "suffixes", ())
        if not isinstance(obj, base):
            raise PluginError(f"{what}: not an instance of {base.__module__}.{base.__name__}")
        if not suffixes or any(not s.startswith(".") or s != s.lower() for s in suffixes):
            raise PluginError(
                f"{what}: suffixes must be non-empty, lower case, dotted: {suffixes!r}"
            )
        return
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginError(f"{what}: not a subclass of {base.__module__}.{base.__name__}")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise PluginError(f"{what}: it does not implement {missing}")
    config = getattr(obj, "Config", None)
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        raise PluginError(f"{what}: its Config is not a ComponentConfig subclass")
    if kind == "pose_stage" and not isinstance(getattr(obj, "name", None), str):
        raise PluginError(f"{what}: it has no class attribute name (a str)")


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


def _distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str, str]:
    """``(plugin name, distribution, version)`` of a registered plugin."""
    name = pm.get_name(plugin) or "unknown:unknown"
    dist = name.split(":", 1)[0]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return name, dist, version


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every ``register_*`` hook implementation and collect the components it registers.

    Raises:
        PluginError: two plugins register the same name for one kind, or a component is not
            what its kind declares (:func:`check_component`).
    """
    registry = Registry(manager=pm)
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin, dist, version = _distribution_of(pm, impl.plugin)

            def register(
                name: str,
                obj: Any,
                _k: str = kind,
                _p: str = plugin,
                _d: str = dist,
                _v: str = version,
            ) -> None:
                check_component(_k, name, obj, _p)
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
