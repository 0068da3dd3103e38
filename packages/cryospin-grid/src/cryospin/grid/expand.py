"""Expansion of a grid spec into validated points (``points x product(axes) x seeds``).

Precedence and input-data rules are those of :mod:`cryospin.grid.spec`; every point's run
configuration is validated here, its components in :mod:`cryospin.grid.validate`.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cryospin.core.dotted import has_dotted, set_dotted
from cryospin.core.errors import ConfigError
from cryospin.grid.keys import format_value, slug
from cryospin.grid.model import Grid, GridPoint, GridSpec
from cryospin.grid.validate import check_files, check_simulate, validate_components

SIMULATE_PREFIX = "simulate."


def expand(
    spec: GridSpec,
    *,
    source: str = "<grid>",
    base_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    particles: str | None = None,
    gt_map: str | None = None,
    data_dir: Path | None = None,
    seeds: list[int] | None = None,
    validate: bool = True,
) -> Grid:
    """Expand ``spec`` into validated points.

    Args:
        spec: the grid file's content.
        source: the file (for messages).
        base_dir: folder that ``base_config`` is relative to.
        overrides: ``--set`` values (dotted keys); ``simulate.*`` keys change the simulate block.
        particles: ``--particles`` (wins over everything).
        gt_map: ``--gt-map`` (wins over everything).
        data_dir: where the simulate block's stack lives (``DIR/data``); its files need not exist.
        seeds: replace the grid's seeds (``--seeds``).
        validate: validate components and dry-build encoders (``False``: run config only).

    Raises:
        ConfigError: a bad grid, override or point (one line naming point and field).
    """
    from cryospin.core.engine.config import validate_config

    overrides = dict(overrides or {})
    simulate = _simulate_block(spec, overrides, source)
    base = _base_data(spec, base_dir, source)
    if seeds is not None:
        try:
            checked = GridSpec.model_validate({"seeds": seeds}).seeds
            spec = spec.model_copy(update={"seeds": checked})
        except ValidationError:
            raise ConfigError(f"--seeds {seeds}: give distinct seeds") from None
    sim_stack = (Path(data_dir) if data_dir is not None else Path("data")) / "particles.star"
    axis_keys = list(spec.axes)
    points: list[GridPoint] = []
    seen: set[str] = set()
    for pname, pset in _point_factors(spec, f"grid {source}"):
        for combo in itertools.product(*(spec.axes[k] for k in axis_keys)):
            axis = dict(zip(axis_keys, combo, strict=True))
            label = _label(pname, pset, axis)
            for seed in spec.seed_list():
                where = f"grid point '{label}' (seed {seed})"
                data = copy.deepcopy(base)
                for k, v in [*pset.items(), *axis.items()]:
                    set_dotted(data, k, v, where)
                data["seed"] = seed
                for k, v in overrides.items():
                    set_dotted(data, k, v, where)
                if particles is not None:
                    data["particles"] = particles
                if gt_map is not None:
                    data["gt_map"] = gt_map
                simulated = not data.get("particles")
                if simulated:
                    _use_simulated(data, simulate, sim_stack, where)
                try:
                    cfg = validate_config(data)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                check_files(cfg, where, Path(data["particles"]).parent if simulated else None)
                key = f"{label}/seed{seed}"
                if key in seen:
                    raise ConfigError(
                        f"{where}: two points share the label '{label}'; "
                        "name the points (points[].name)"
                    )
                seen.add(key)
                points.append(
                    GridPoint(
                        label, seed, {**pset, **axis}, cfg, Path("runs") / label / f"seed{seed}"
                    )
                )
    if validate:
        box = simulate.get("box", 128) if simulate is not None else None
        for pt in points:
            validate_components(pt, box if pt.reads(sim_stack) else None)
    return Grid(
        name=spec.name or Path(source).stem,
        spec=spec,
        source=str(source),
        simulate=simulate,
        points=points,
    )


def _simulate_block(
    spec: GridSpec, overrides: dict[str, Any], source: str
) -> dict[str, Any] | None:
    """Return the simulate block in effect: the grid's, with ``simulate.*`` overrides popped in."""
    sim_over = {
        k[len(SIMULATE_PREFIX) :]: overrides.pop(k)
        for k in list(overrides)
        if k.startswith(SIMULATE_PREFIX)
    }
    simulate = copy.deepcopy(spec.simulate)
    if sim_over:
        if simulate is None:
            raise ConfigError(f"--set simulate.*: grid {source} has no simulate block")
        for k, v in sim_over.items():
            set_dotted(simulate, k, v, "--set")
    if simulate is not None:
        check_simulate(simulate, source)
    return simulate


def _base_data(spec: GridSpec, base_dir: Path | None, source: str) -> dict[str, Any]:
    """``base_config`` (relative to ``base_dir``) with the grid's ``base`` fields on top."""
    from cryospin.core.engine.config import load_yaml

    base: dict[str, Any] = {}
    if spec.base_config:
        cfg_path = Path(spec.base_config)
        if not cfg_path.is_absolute() and base_dir is not None:
            cfg_path = base_dir / cfg_path
        base.update(load_yaml(cfg_path))
    for k, v in spec.base.items():
        set_dotted(base, k, v, f"grid {source}: base")
    return base


def _point_factors(spec: GridSpec, where: str) -> list[tuple[str | None, dict[str, Any]]]:
    """``(name or None, settings)`` of each entry of ``points`` (one empty entry without any)."""
    factors: list[tuple[str | None, dict[str, Any]]] = []
    for i, entry in enumerate(spec.points or [{}]):
        pt = dict(entry)
        name = pt.pop("name", None)
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{where}: points[{i}].name must be a string")
        factors.append((name, pt))
    return factors


def _label(name: str | None, settings: dict[str, Any], axis: dict[str, Any]) -> str:
    """Return the point's name (or settings) and axis values, ``__``-joined and made safe."""
    parts = [name] if name is not None else [f"{k}={format_value(v)}" for k, v in settings.items()]
    parts += [f"{k}={format_value(v)}" for k, v in axis.items()]
    return slug("__".join(parts)) if parts else "base"


def _use_simulated(
    data: dict[str, Any], simulate: dict[str, Any] | None, stack: Path, where: str
) -> None:
    """Point ``data`` at the simulated ``stack`` (its truth map, inverted contrast unless set)."""
    if simulate is None:
        raise ConfigError(
            f"{where}: no particles: give --particles, set "
            "'particles' in the grid, or add a simulate block"
        )
    data["particles"] = str(stack)
    if not has_dotted(data, "gt_map"):
        data["gt_map"] = str(stack.parent / "gt_map.mrc")
    if not has_dotted(data, "invert_contrast"):
        data["invert_contrast"] = True
