"""Grid files: the model, expansion into points and up-front validation of every point.

A grid file (YAML) names a base run configuration and what to vary::

    name: heads                      # optional; defaults to the file name
    description: free text
    base_config: base.yaml           # optional YAML run configuration, relative to this file
    base:                            # RunConfig fields on top of base_config
      encoder: multihead
      epochs: 20
    simulate:                        # optional input, used only when no particles are given
      {preset: hsp90, box: 64, n: 2000, snr: 0.1, seed: 0}
    points:                          # optional explicit list; ``name`` labels the point
      - {name: semi-amortized, stage_schedule: semi-amortized}
      - {name: amortized, stage_schedule: amortized}
    axes:                            # optional; the product of the value lists
      encoder_config.n_heads: [1, 2, 4]
    seeds: [0, 1, 2]                 # or a count: 3 means [0, 1, 2]

Keys of ``points``, ``axes`` and ``--set`` overrides are run-configuration fields; a dotted key
reaches into a nested mapping (``encoder_config.n_heads``, ``auto_switch.patience``). The points
are ``points x product(axes) x seeds`` (a missing ``points`` or ``axes`` contributes one empty
factor). Precedence, lowest first: ``base_config``, ``base``, the point, the axes, the seed,
``--set`` overrides, ``--particles``/``--gt-map``.

Input data: when no particles file results from the above, the grid's ``simulate`` block (the
settings of :class:`cryospin.io.simulate.SimulationConfig` except ``out``) is simulated once into
``DIR/data/``; its ``particles.star`` becomes ``particles`` and, unless a point sets the field
itself, ``gt_map`` is its ``gt_map.mrc`` and ``invert_contrast`` is true (simulated stacks are
protein-bright, like RELION-extracted data, and the core forward model is protein-dark).
``--set simulate.KEY=VALUE`` overrides the block. Without particles and without a ``simulate``
block the grid is invalid (give ``--particles``).

Every point is validated before anything runs: the run configuration
(:func:`cryospin.core.engine.config.validate_config`), that ``particles``/``gt_map`` files exist,
the encoder/decoder names through the registry, their component configurations, and, when the
working box is known, a dry construction of the encoder (which checks the box against the network
depth). The first bad point raises one
:class:`~cryospin.core.errors.ConfigError` line naming the point, its seed and the field.

Run folders: ``DIR/runs/<label>/seed<k>/``, with ``<label>`` the point's name and axis values
(``semi-amortized``, ``encoder_config.n_heads=4``, joined by ``__``), made filesystem safe.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cryospin.core.errors import ConfigError, CryospinError

#: Fields that do not change a run's result: a run folder is reused (resumed) despite them.
#: ``max_steps`` is among them so that a run stopped by it resumes when it is lifted.
NEUTRAL_FIELDS = frozenset({"progress", "num_threads", "device", "cache_images", "max_steps"})
SIMULATE_PREFIX = "simulate."
GRIDS_PACKAGE = "cryospin.core.grid.grids"


class GridSpec(BaseModel):
    """The content of a grid file (unknown top-level keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str = ""
    base_config: str | None = Field(None, description="YAML run configuration, relative path")
    base: dict[str, Any] = Field(default_factory=dict)
    simulate: dict[str, Any] | None = None
    points: list[dict[str, Any]] = Field(default_factory=list)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | int = Field(default_factory=lambda: [0])

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | int) -> list[int] | int:
        values = list(range(v)) if isinstance(v, int) else v
        if not values:
            raise ValueError("needs at least one seed")
        if len(set(values)) != len(values):
            raise ValueError(f"repeated seed in {values}")
        return v

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"axis '{key}' has no values")
        return v

    def seed_list(self) -> list[int]:
        """Return the seeds as a list."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass
class GridPoint:
    """One run of a grid: a label (shared by its seeds), a seed, and the validated configuration."""

    label: str
    seed: int
    values: dict[str, Any]  # what distinguishes the point: its settings and axis values
    config: Any  # RunConfig
    run_dir: Path  # relative to the grid's output folder

    @property
    def key(self) -> str:
        """``label`` and seed, for messages."""
        return f"'{self.label}' (seed {self.seed})"


@dataclass
class Grid:
    """An expanded grid: its spec, the simulate block in effect and the points in order."""

    name: str
    spec: GridSpec
    source: str
    simulate: dict[str, Any] | None
    points: list[GridPoint] = field(default_factory=list)

    def labels(self) -> list[str]:
        """Point labels in grid order, without repeats (one per seed group)."""
        return list(dict.fromkeys(p.label for p in self.points))


# ------------------------------------------------------------------------------------ loading
def shipped_grids() -> dict[str, Path]:
    """``{name: path}`` of the grids shipped in :mod:`cryospin.core.grid.grids`."""
    folder = resources.files(GRIDS_PACKAGE)
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir()
            if p.name.endswith((".yaml", ".yml"))}


def resolve_grid_path(name_or_path: str | Path) -> Path:
    """Return a grid file path, or a shipped grid's name (``paper-table2``) -> its file.

    Raises:
        ConfigError: neither an existing file nor a shipped grid name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_grids()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    known = ", ".join(sorted(shipped))
    raise ConfigError(f"grid file {name_or_path} not found (shipped grids: {known})")


def load_spec(path: str | Path) -> GridSpec:
    """Read and check a grid file; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read grid file {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {path} must hold a mapping (base, axes, points, seeds, ...)")
    try:
        return GridSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "grid"
        raise ConfigError(f"grid file {path}: field '{loc}': {err.get('msg', 'invalid')}") from None


# ---------------------------------------------------------------------------- dict utilities
def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["epochs=1", "encoder_config.channels=[4, 8]"]`` -> ``{dotted key: YAML value}``."""
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
    """``data[a][b] = value`` for ``key = "a.b"``; a nested mapping value is merged in."""
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


# ------------------------------------------------------------------------------------ expansion
def _point_factors(spec: GridSpec, where: str) -> list[tuple[str | None, dict[str, Any]]]:
    factors: list[tuple[str | None, dict[str, Any]]] = []
    for i, pt in enumerate(spec.points or [{}]):
        pt = dict(pt)
        name = pt.pop("name", None)
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{where}: points[{i}].name must be a string")
        factors.append((name, pt))
    return factors


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
    from cryospin.core.engine.config import load_yaml, validate_config

    name = spec.name or Path(source).stem
    overrides = dict(overrides or {})
    sim_over = {k[len(SIMULATE_PREFIX):]: overrides.pop(k) for k in list(overrides)
                if k.startswith(SIMULATE_PREFIX)}
    simulate = copy.deepcopy(spec.simulate)
    if sim_over:
        if simulate is None:
            raise ConfigError(f"--set simulate.*: grid {source} has no simulate block")
        for k, v in sim_over.items():
            set_dotted(simulate, k, v, "--set")
    if simulate is not None:
        check_simulate(simulate, source)
    base: dict[str, Any] = {}
    if spec.base_config:
        cfg_path = Path(spec.base_config)
        if not cfg_path.is_absolute() and base_dir is not None:
            cfg_path = base_dir / cfg_path
        base.update(load_yaml(cfg_path))
    for k, v in spec.base.items():
        set_dotted(base, k, v, f"grid {source}: base")

    if seeds is not None:
        try:
            checked = GridSpec.model_validate({"seeds": seeds}).seeds
            spec = spec.model_copy(update={"seeds": checked})
        except ValidationError:
            raise ConfigError(f"--seeds {seeds}: give distinct seeds") from None
    axis_keys = list(spec.axes)
    combos = list(itertools.product(*(spec.axes[k] for k in axis_keys)))
    points: list[GridPoint] = []
    seen: dict[str, str] = {}
    for pname, pset in _point_factors(spec, f"grid {source}"):
        for combo in combos:
            values: dict[str, Any] = {}
            parts: list[str] = []
            for k, v in pset.items():
                values[k] = v
            if pname is not None:
                parts.append(pname)
            else:
                parts += [f"{k}={format_value(v)}" for k, v in pset.items()]
            for k, v in zip(axis_keys, combo, strict=True):
                values[k] = v
                parts.append(f"{k}={format_value(v)}")
            label = slug("__".join(parts)) if parts else "base"
            for seed in spec.seed_list():
                data = copy.deepcopy(base)
                where = f"grid point '{label}' (seed {seed})"
                for k, v in pset.items():
                    set_dotted(data, k, v, where)
                for k, v in zip(axis_keys, combo, strict=True):
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
                    if simulate is None:
                        raise ConfigError(f"{where}: no particles: give --particles, set "
                                          "'particles' in the grid, or add a simulate block")
                    ddir = Path(data_dir) if data_dir is not None else Path("data")
                    data["particles"] = str(ddir / "particles.star")
                    if not has_dotted(data, "gt_map"):
                        data["gt_map"] = str(ddir / "gt_map.mrc")
                    if not has_dotted(data, "invert_contrast"):
                        data["invert_contrast"] = True
                try:
                    cfg = validate_config(data)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                _check_files(cfg, where, Path(data["particles"]).parent if simulated else None)
                key = f"{label}/seed{seed}"
                if key in seen:
                    raise ConfigError(f"{where}: two points share the label '{label}'; "
                                      "name the points (points[].name)")
                seen[key] = label
                points.append(GridPoint(label, seed, values, cfg, Path("runs") / label /
                                        f"seed{seed}"))
    if validate:
        box = simulate.get("box", 128) if simulate is not None else None
        for pt in points:
            validate_components(pt, box if pt.config.particles and simulate is not None
                                and _uses_data_dir(pt, data_dir) else None)
    return Grid(name=name, spec=spec, source=str(source), simulate=simulate, points=points)


def _check_files(cfg: Any, where: str, data_dir: Path | None) -> None:
    """``particles``/``gt_map`` must exist, except the simulated stack's (made before running)."""
    for name in ("particles", "gt_map"):
        value = getattr(cfg, name)
        if value and not Path(value).exists() and (data_dir is None
                                                    or Path(value).parent != data_dir):
            raise ConfigError(f"{where}: field '{name}': file {value} not found")


def _uses_data_dir(point: GridPoint, data_dir: Path | None) -> bool:
    ddir = Path(data_dir) if data_dir is not None else Path("data")
    return Path(point.config.particles) == ddir / "particles.star"


def check_simulate(block: dict[str, Any], source: str) -> None:
    """Validate a simulate block with :class:`cryospin.io.simulate.SimulationConfig`."""
    if "out" in block:
        raise ConfigError(f"grid {source}: simulate.out is not allowed (the grid uses DIR/data)")
    try:
        from cryospin.io.simulate import SimulationConfig
    except ImportError:  # pragma: no cover - cryospin-io is not installed
        raise ConfigError(f"grid {source}: a simulate block needs cryospin-io installed") from None
    try:
        SimulationConfig.model_validate(block)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "simulate"
        raise ConfigError(f"grid {source}: field 'simulate.{loc}': {err.get('msg')}") from None


def validate_components(point: GridPoint, data_box: int | None) -> None:
    """Names through the registry, component configs, and a dry encoder build when the box is known.

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
                raise ConfigError(f"grid point {point.key}: field 'encoder_config' at box "
                                  f"{box}: {msg}") from None


def load_grid(name_or_path: str | Path, **kwargs: Any) -> Grid:
    """:func:`resolve_grid_path` + :func:`load_spec` + :func:`expand` (``kwargs`` go to it)."""
    path = resolve_grid_path(name_or_path)
    spec = load_spec(path)
    return expand(spec, source=str(path), base_dir=path.parent, **kwargs)


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Top-level fields that differ between two config dumps (ignoring :data:`NEUTRAL_FIELDS`)."""
    keys = sorted((set(a) | set(b)) - NEUTRAL_FIELDS)
    return [k for k in keys if a.get(k) != b.get(k)]
