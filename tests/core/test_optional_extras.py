"""Optional dependencies (healpy, submitit, tensorboard) are extras, with one-line messages."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cryospin.core.errors import ConfigError
from cryospin.core.grid.launch import SlurmOptions, slurm_executor


def _requirements(dist: str) -> list[Requirement]:
    return [Requirement(r) for r in metadata.requires(dist) or []]


def test_core_extras_hold_the_optional_packages() -> None:
    reqs = _requirements("cryospin-core")
    required = {r.name for r in reqs if r.marker is None}
    assert not {"healpy", "submitit", "tensorboard"} & required
    by_extra = {
        extra: {r.name for r in reqs if r.marker and r.marker.evaluate({"extra": extra})}
        for extra in ("plots", "slurm", "tensorboard")
    }
    assert by_extra == {"plots": {"healpy"}, "slurm": {"submitit"}, "tensorboard": {"tensorboard"}}


def test_io_depends_on_finufft() -> None:
    assert "finufft" in {r.name for r in _requirements("cryospin-io") if r.marker is None}


def test_slurm_without_submitit_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    with pytest.raises(ConfigError, match=r"needs submitit: pip install 'cryospin\[slurm\]'"):
        slurm_executor(tmp_path, SlurmOptions(cluster="local"), jobs=1)
