"""The ``cryospin`` command line: one module per command, each docstring is its ``--help``."""
