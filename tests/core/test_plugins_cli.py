"""The example third-party plugin (examples/cryospin-example-plugin) through the real machinery.

The plugin is installed editable into the running environment if it is not there yet
(``scripts/setup.sh`` installs it; this fixture covers a venv made without it). Then it must show
in ``cryospin plugins`` with its distribution name and version, obey ``CRYOSPIN_PLUGINS``, be
usable by name from the registry, and pass the encoder contract.
"""

from __future__ import annotations

import importlib
import os
import site
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

from cryospin.core.registry import ENV_VAR, PluginError, get_registry
from cryospin.core.testing import check_encoder

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "cryospin-example-plugin"
DIST = "cryospin-example-plugin"


@pytest.fixture(scope="module")
def example_plugin() -> str:
    """Install the example plugin if needed; return its version."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        pass
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(EXAMPLE)]
    # offline first (setuptools is in the venv through torch), then with build isolation
    done = subprocess.run([*cmd[:5], "--no-build-isolation", *cmd[5:]], capture_output=True)
    if done.returncode != 0:
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"could not install {EXAMPLE}: {done.stderr}"
    site.addsitedir(sysconfig.get_paths()["purelib"])  # pick up the new editable .pth finder
    importlib.invalidate_caches()
    get_registry(refresh=True)
    return metadata.version(DIST)


def _cli(*args: str, env_var: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if env_var is not None:
        env[ENV_VAR] = env_var
    return subprocess.run(
        [sys.executable, "-m", "cryospin.core", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _row(output: str, name: str) -> str | None:
    rows = [line for line in output.splitlines() if f" {name} " in line]
    return rows[0] if rows else None


def test_listed_with_distribution_and_version(example_plugin: str) -> None:
    assert example_plugin == "0.1.0"
    done = _cli("plugins")
    assert done.returncode == 0, done.stderr
    row = _row(done.stdout, "example-tiny")
    assert row is not None, done.stdout
    assert "encoder" in row and DIST in row and example_plugin in row
    # the built-ins are listed the same way
    assert "cryospin-encoders" in (_row(done.stdout, "multihead") or "")


def test_env_var_controls_loading(example_plugin: str) -> None:
    done = _cli("plugins", env_var="")
    assert done.returncode == 0, done.stderr
    assert _row(done.stdout, "example-tiny") is None
    assert _row(done.stdout, "multihead") is not None  # built-ins always load
    done = _cli("plugins", env_var=DIST)
    assert _row(done.stdout, "example-tiny") is not None


def test_usable_by_name(example_plugin: str) -> None:
    registry = get_registry(refresh=True)
    assert "example-tiny" in registry.names("encoder")
    comp = registry.components["encoder"]["example-tiny"]
    assert (comp.distribution, comp.version) == (DIST, example_plugin)
    cls = registry.get("encoder", "example-tiny")
    enc = cls(cls.Config(n_candidates=3), 32, 4.0)
    assert enc.n_candidates == 3
    check_encoder(cls, box=32, pixel_size_A=4.0)


def test_unknown_name_lists_the_plugin(example_plugin: str) -> None:
    with pytest.raises(PluginError, match="example-tiny"):
        get_registry(refresh=True).get("encoder", "example-tin")
