"""Fixtures of the I/O tests: paths of the real files in ``../shared/data``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def stacks(shared_data: Path) -> Path:
    return shared_data / "real-stacks"


@pytest.fixture(scope="session")
def metadata_dir(shared_data: Path) -> Path:
    return shared_data / "metadata"


@pytest.fixture(scope="session")
def trpv1(stacks: Path):
    """The TRPV1 stack: its STAR names ``./batch_0_restacked.mrc``, hence ``stack=``."""
    from cryospin.io import open_particles

    folder = stacks / "trpv1"
    return open_particles(
        folder / "trpv1_small_stack.star", stack=folder / "trpv1_small_stack.mrcs"
    )
