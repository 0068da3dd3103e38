"""Example third-party cryospin plugin providing the ``example-tiny`` encoder."""

__version__ = "0.1.0"
