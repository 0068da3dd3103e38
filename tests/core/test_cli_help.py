"""Every command's --help is its module docstring with an example, laid out as written."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cryospin.core.cli.main import build_cli

CLI = build_cli()


def _commands() -> list[list[str]]:
    paths = [[]]
    for name, cmd in CLI.commands.items():
        paths.append([name])
        if isinstance(cmd, click.Group):
            paths += [[name, sub] for sub in cmd.commands]
    return paths


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "cryospin")
def test_help_shows_an_unwrapped_example(path: list[str]) -> None:
    result = CliRunner().invoke(CLI, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "\\b" not in result.output
    lines = result.output.splitlines()
    examples = [i for i, line in enumerate(lines) if line.strip() == "Example:"]
    assert examples, f"no 'Example:' paragraph in `cryospin {' '.join(path)} --help`"
    first = lines[examples[0] + 1].strip()
    assert first.startswith("cryospin") or first.startswith("torchrun") or "=" in first
