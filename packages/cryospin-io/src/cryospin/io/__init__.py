"""cryospin-io: RELION STAR, cryoSPARC .cs, cryoDRGN pkl and MRC particle data in and out.

The names below are imported lazily (the CLI loads this package's plugin at every start):

* :func:`open_particles` - open a ``.star``/``.cs``/``.mrcs`` file as a lazy ParticleStack.
* :func:`write_star`, :func:`write_cs`, :func:`write_poses_pkl`, :func:`write_ctf_pkl` - poses
  and CTFs out; :func:`new_particle_stack`, :func:`stack_image_names` - metadata of new stacks.
* :func:`write_mrc_stack`, :class:`StackWriter`, :func:`write_map`, :func:`read_map` - MRC.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_particles": "cryospin.io.sources",
    "read_star": "cryospin.io.star",
    "write_star": "cryospin.io.star_write",
    "new_particle_stack": "cryospin.io.star_write",
    "stack_image_names": "cryospin.io.star_write",
    "read_cs": "cryospin.io.cryosparc",
    "write_cs": "cryospin.io.cryosparc",
    "read_ctf_pkl": "cryospin.io.cryodrgn",
    "write_ctf_pkl": "cryospin.io.cryodrgn",
    "read_poses_pkl": "cryospin.io.cryodrgn",
    "write_poses_pkl": "cryospin.io.cryodrgn",
    "write_mrc_stack": "cryospin.io.mrc",
    "StackWriter": "cryospin.io.mrc",
    "write_map": "cryospin.io.mrc",
    "read_map": "cryospin.io.mrc",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cryospin.io' has no attribute '{name}'")
