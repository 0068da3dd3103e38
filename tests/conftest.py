"""Shared fixtures: the location of the real data in ``../shared/data`` (read-only).

The data folder is found from ``CRYOSPIN_SHARED_DATA`` or, by default, ``<repo>/../shared/data``.
Tests that need it fail (not skip) when it is missing: CI always has it beside the clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("CRYOSPIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "MANIFEST.md").is_file():
        raise FileNotFoundError(
            f"real test data not found at {path}; "
            "set CRYOSPIN_SHARED_DATA to the shared/data folder"
        )
    return path
