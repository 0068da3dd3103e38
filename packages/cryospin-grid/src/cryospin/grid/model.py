"""The grid data model: a grid file's content (:class:`GridSpec`), its points and the expanded grid.

The file format is described in :mod:`cryospin.grid.spec`; expansion of a spec into points
is :func:`cryospin.grid.expand.expand`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from cryospin.core.engine.config import RunConfig

#: Fields that do not change a run's result: a run folder is reused (resumed) despite them.
#: ``max_steps`` is among them so that a run stopped by it resumes when it is lifted.
NEUTRAL_FIELDS = frozenset({"progress", "num_threads", "device", "cache_images", "max_steps"})


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
    config: RunConfig
    run_dir: Path  # relative to the grid's output folder

    @property
    def key(self) -> str:
        """``label`` and seed, for messages."""
        return f"'{self.label}' (seed {self.seed})"

    def reads(self, stack: Path) -> bool:
        """Whether the point's ``particles`` file is ``stack`` (e.g. the grid's simulated one)."""
        return self.config.particles is not None and Path(self.config.particles) == Path(stack)


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


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Top-level fields that differ between two config dumps (ignoring :data:`NEUTRAL_FIELDS`)."""
    keys = sorted((set(a) | set(b)) - NEUTRAL_FIELDS)
    return [k for k in keys if a.get(k) != b.get(k)]
