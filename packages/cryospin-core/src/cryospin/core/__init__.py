"""cryospin core: interfaces, plugin hookspecs, SO(3) and Fourier maths, training engine, CLI.

Core never imports the built-in encoders, decoders or I/O: they reach it through the ``cryospin``
entry-point group exactly as a third-party plugin does (see :mod:`cryospin.core.registry`).
"""

__version__ = "0.1.0"
