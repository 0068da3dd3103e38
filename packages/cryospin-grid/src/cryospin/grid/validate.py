"""Up-front validation of a grid: the simulate block, input files and each point's components.

Everything here runs before any point runs, so a bad grid fails in seconds with one
:class:`~cryospin.core.errors.ConfigError` line naming the point, its seed and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cryospin.core.errors import ConfigError, CryospinError
from cryospin.grid.model import GridPoint


def check_simulate(block: dict[str, Any], source: str) -> None:
    """Validate a simulate block with :class:`cryospin.io.simulate.SimulationConfig`.

    Raises:
        ConfigError: ``out`` is set (the grid owns ``DIR/data``), cryospin-io is missing, or a
            field is invalid (named as ``simulate.<field>``).
    """
    if "out" in block:
        raise ConfigError(f"grid {source}: simulate.out is not allowed (the grid uses DIR/data)")
    try:
        from cryospin.io.simulate import SimulationConfig
    except ImportError:  # pragma: no cover - cryospin-io is not installed
        raise ConfigError(f"grid {source}: a simulate block needs cryospin-io installed") from None
    try:
        SimulationConfig.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(f"grid {source}: {field_error(exc, 'simulate.')}") from None


def field_error(exc: ValidationError, prefix: str = "") -> str:
    """Return ``field '<prefix><location>': <message>`` for the first error of ``exc``.

    The location is the dotted path pydantic reports (``seeds``, ``axes.epochs``); a model-level
    error without one is named by ``prefix`` alone (its trailing dot dropped) or ``grid``.
    """
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    name = prefix + loc if loc else prefix.rstrip(".") or "grid"
    return f"field '{name}': {err.get('msg', 'invalid')}"


def check_files(cfg: Any, where: str, data_dir: Path | None) -> None:
    """``particles``/``gt_map`` of run configuration ``cfg`` must exist.

    Files in ``data_dir`` (the simulated stack, made before running) are exempt.

    Raises:
        ConfigError: ``{where}: field '<name>': file <path> not found``.
    """
    for name in ("particles", "gt_map"):
        value = getattr(cfg, name)
        if (
            value
            and not Path(value).exists()
            and (data_dir is None or Path(value).parent != data_dir)
        ):
            raise ConfigError(f"{where}: field '{name}': file {value} not found")


def validate_components(point: GridPoint, data_box: int | None) -> None:
    """Names through the registry, component configs, and a dry encoder build when the box is known.

    ``data_box`` is the box of the input stack when known before running (a simulated stack);
    the point's own ``box`` (working box) wins over it.

    Raises:
        ConfigError: naming the point and the field (``encoder``, ``decoder_config.hidden``, ...).
    """
    from cryospin.core.engine.config import validate_component_config
    from cryospin.core.registry import get_registry

    cfg = point.config
    registry = get_registry()
    kinds = [("decoder", cfg.decoder, cfg.decoder_config)]
    if cfg.stage_schedule != "direct":
        kinds.insert(0, ("encoder", cfg.encoder, cfg.encoder_config))
    box = cfg.box or data_box
    for kind, name, conf in kinds:
        try:
            cls = registry.get(kind, name)
        except CryospinError as exc:
            raise ConfigError(f"grid point {point.key}: field '{kind}': {exc}") from None
        try:
            parsed = validate_component_config(cls, conf, f"{kind}_config")
        except ConfigError as exc:
            raise ConfigError(f"grid point {point.key}: {exc}") from None
        if kind == "encoder" and box is not None:
            try:
                cls(parsed, int(box), 1.0)
            except (CryospinError, ValueError, RuntimeError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ConfigError(
                    f"grid point {point.key}: field 'encoder_config' at box {box}: {msg}"
                ) from None
