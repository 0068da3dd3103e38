"""Entry point of the ``cryospin`` console script.

Every subcommand, the core's own included, is added through the ``register_commands`` hook, so a
plugin's command appears exactly like a built-in one.
"""

from __future__ import annotations

import sys

import click

from cryospin.core import __version__
from cryospin.core.cli import command_help
from cryospin.core.errors import CryospinError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cryospin")
def cli() -> None:
    r"""cryospin: ab-initio cryo-EM reconstruction with semi-amortized pose inference.

    \b
    Example:
        cryospin plugins
        cryospin run --particles particles.star --encoder multihead --decoder hartley --out run1/
    """


def build_cli() -> click.Group:
    """Return the ``cryospin`` group with every plugin's commands added."""
    from cryospin.core.registry import get_registry

    registry = get_registry()
    registry.manager.hook.register_commands(cli=cli)
    _normalise_help(cli)
    return cli


def _normalise_help(command: click.Command) -> None:
    """Apply :func:`command_help` to ``command`` and, for a group, to every subcommand."""
    command.help = command_help(command.help)
    for sub in getattr(command, "commands", {}).values():
        _normalise_help(sub)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`CryospinError` prints one line to stderr and exits with status 2."""
    try:
        build_cli().main(args=argv, prog_name="cryospin", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CryospinError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
