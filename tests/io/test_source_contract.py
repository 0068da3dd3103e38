"""Every registered image source (built-in or plugin) passes the cryospin.core.testing contract.

Samples for the built-in formats: a toy STAR + MRC stack (tests/integration/run_toy_data), and
the same particles written as a cryoSPARC ``.cs`` by its own source.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from cryospin.core.registry import get_registry
from cryospin.core.testing.sources import (
    check_source_bad_files,
    check_source_declaration,
    check_source_maps,
    check_source_read,
    check_source_write_poses,
)
from cryospin.io.sources import MrcStackSource, RelionStarSource

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from run_toy_data import make_dataset  # noqa: E402

SOURCES = get_registry().names("image_source")


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    """A sample file per built-in suffix."""
    folder = tmp_path_factory.mktemp("sources")
    toy = make_dataset(folder, n=6, box=16, snr=2.0, seed=3)
    registry = get_registry()
    star = registry.source_for(toy["star"])
    stack = star.read(toy["star"])
    stack = dataclasses.replace(stack, extra={**stack.extra, "absolute_image_paths": True})
    cs = folder / "particles.cs"
    registry.source_for(cs).write_poses(cs, stack, np.asarray(stack.rotations), np.zeros((6, 2)))
    mrcs = Path(toy["star"]).with_suffix(".mrcs")
    return {".star": Path(toy["star"]), ".cs": cs, ".mrcs": mrcs, ".mrc": mrcs}


def _source(name: str):
    return get_registry().get("image_source", name)


def test_builtins_registered() -> None:
    assert {"relion-star", "cryosparc-cs", "mrc-stack"} <= set(SOURCES)


@pytest.mark.parametrize("name", SOURCES)
def test_declaration(name: str) -> None:
    check_source_declaration(_source(name))


@pytest.mark.parametrize("name", SOURCES)
def test_bad_files_raise_input_error(name: str, tmp_path: Path) -> None:
    check_source_bad_files(_source(name), tmp_path)


@pytest.mark.parametrize("name", SOURCES)
def test_maps_round_trip(name: str, tmp_path: Path) -> None:
    check_source_maps(_source(name), tmp_path)


@pytest.mark.parametrize("name", SOURCES)
def test_read_and_write_poses(name: str, samples: dict[str, Path], tmp_path: Path) -> None:
    source = _source(name)
    sample = next((samples[s] for s in source.suffixes if s in samples), None)
    assert sample is not None, f"no sample file for {name} {source.suffixes}: add one above"
    check_source_read(source, sample)
    check_source_write_poses(source, sample, tmp_path)


class _LeakyErrors(RelionStarSource):
    def read(self, path, datadir=None, **options):
        raise RuntimeError("unexpected")


class _DropsShifts(RelionStarSource):
    def write_poses(self, path, stack, rotations, shifts_A):
        super().write_poses(path, stack, rotations, np.zeros_like(shifts_A))


class _WrongVoxel(MrcStackSource):
    def write_map(self, path, volume, voxel_size_A):
        super().write_map(path, volume, 2 * voxel_size_A)


def test_the_contract_catches_broken_sources(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="not InputError"):
        check_source_bad_files(_LeakyErrors(), tmp_path)
    with pytest.raises(AssertionError, match="poses off by"):
        check_source_write_poses(_DropsShifts(), samples[".star"], tmp_path)
    with pytest.raises(AssertionError, match="voxel size 5.0 after writing 2.5"):
        check_source_maps(_WrongVoxel(), tmp_path)
