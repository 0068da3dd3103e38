"""Errors that the CLI reports as one line (exit status 2) instead of a traceback."""

from __future__ import annotations


class CryospinError(Exception):
    """Base class of user-facing errors: bad input files, bad configuration values, bad plugins.

    The message names the file, row or field and what was expected.
    """


class InputError(CryospinError, ValueError):
    """A file or value given by the user is malformed (names the file, row or field)."""


class ConfigError(CryospinError, ValueError):
    """A configuration value is invalid (names the field and what was expected)."""
