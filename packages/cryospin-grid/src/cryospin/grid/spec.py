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

This module reads grid files; the model is in :mod:`.model`, expansion in :mod:`.expand`,
validation in :mod:`.validate` and dotted keys and labels in :mod:`.keys`. The names the
``cryospin grid`` command uses are importable from here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cryospin.core.dotted import parse_set
from cryospin.core.errors import ConfigError
from cryospin.grid.expand import expand
from cryospin.grid.keys import format_value
from cryospin.grid.model import Grid, GridSpec
from cryospin.grid.validate import field_error

__all__ = [
    "format_value",
    "load_grid",
    "load_spec",
    "parse_set",
    "resolve_grid_path",
    "shipped_grids",
]

GRIDS_PACKAGE = "cryospin.grid.grids"


def shipped_grids() -> dict[str, Path]:
    """``{name: path}`` of the grids shipped in :mod:`cryospin.grid.grids`."""
    folder = resources.files(GRIDS_PACKAGE)
    return {
        Path(p.name).stem: Path(str(p))
        for p in folder.iterdir()
        if p.name.endswith((".yaml", ".yml"))
    }


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
    """Read and check a grid file; errors name the file and the field.

    Raises:
        ConfigError: unreadable or malformed YAML, not a mapping, or an invalid field.
    """
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
        raise ConfigError(f"grid file {path}: {field_error(exc)}") from None


def load_grid(name_or_path: str | Path, **kwargs: Any) -> Grid:
    """Apply :func:`resolve_grid_path`, :func:`load_spec` and :func:`~.expand.expand` (``kwargs``).

    Raises:
        ConfigError: as those three.
    """
    path = resolve_grid_path(name_or_path)
    spec = load_spec(path)
    return expand(spec, source=str(path), base_dir=path.parent, **kwargs)
