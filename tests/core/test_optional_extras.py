"""Optional dependencies are extras (healpy, tensorboard: core; submitit: cryospin-grid), with
one-line messages; core never imports the grid package."""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cryospin.core.errors import ConfigError
from cryospin.grid.launch import SlurmOptions, slurm_executor


def _requirements(dist: str) -> list[Requirement]:
    return [Requirement(r) for r in metadata.requires(dist) or []]


def _by_extra(reqs: list[Requirement], extras: tuple[str, ...]) -> dict[str, set[str]]:
    return {
        extra: {r.name for r in reqs if r.marker and r.marker.evaluate({"extra": extra})}
        for extra in extras
    }


def test_core_extras_hold_the_optional_packages() -> None:
    reqs = _requirements("cryospin-core")
    required = {r.name for r in reqs if r.marker is None}
    assert not {"healpy", "submitit", "tensorboard", "cryospin-grid"} & required
    assert _by_extra(reqs, ("plots", "tensorboard")) == {
        "plots": {"healpy"},
        "tensorboard": {"tensorboard"},
    }


def test_submitit_is_the_grid_packages_slurm_extra() -> None:
    reqs = _requirements("cryospin-grid")
    assert "cryospin-core" in {r.name for r in reqs if r.marker is None}
    assert "submitit" not in {r.name for r in reqs if r.marker is None}
    assert _by_extra(reqs, ("slurm",)) == {"slurm": {"submitit"}}


def test_core_never_imports_the_grid_package() -> None:
    """cryospin-core works without cryospin-grid: no core module imports ``cryospin.grid``."""
    import cryospin.core

    root = Path(cryospin.core.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[:2] == ["cryospin", "grid"]
            ]
    assert offenders == []


def test_io_depends_on_finufft() -> None:
    assert "finufft" in {r.name for r in _requirements("cryospin-io") if r.marker is None}


def test_slurm_without_submitit_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    with pytest.raises(ConfigError, match=r"needs submitit: pip install 'cryospin\[slurm\]'"):
        slurm_executor(tmp_path, SlurmOptions(cluster="local"), jobs=1)
