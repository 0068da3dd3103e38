"""Where each particle's image lies on disk, for files that must name it from another folder.

A particle file read with its images knows the stack each image was found in (after ``--datadir``
and ``--stack`` resolution): the :class:`~cryospin.io.mrc.MrcImageReader` holds the files, the
file of each particle and the 0-based image number in it, possibly under
:class:`~cryospin.core.particles.SubsetReader` layers (``cryospin run --ind``).

Writers name images by these absolute paths when ``stack.extra["absolute_image_paths"]`` is true
(:func:`wants_absolute_paths`; set by ``cryospin run`` for the ``poses.*`` it writes into its
output folder, from where the original relative names would not resolve).
"""

from __future__ import annotations

import numpy as np

from cryospin.core.particles import ParticleStack, SubsetReader
from cryospin.io.mrc import MrcImageReader


def image_locations(stack: ParticleStack) -> tuple[np.ndarray, np.ndarray] | None:
    """``(0-based image numbers (N,) int64, absolute stack paths (N,) object)`` of ``stack``.

    ``None`` when the stack's images were not opened from MRC stacks (metadata-only stacks,
    readers of other plugins).
    """
    reader, sel = stack.images, None
    while isinstance(reader, SubsetReader):
        sel = reader.sel if sel is None else reader.sel[sel]
        reader = reader.base
    if not isinstance(reader, MrcImageReader):
        return None
    files = np.array([str(f.resolve()) for f in reader.files], dtype=object)
    file_ids, numbers = reader.file_ids, reader.indices
    if sel is not None:
        file_ids, numbers = file_ids[sel], numbers[sel]
    return np.asarray(numbers, dtype=np.int64), files[file_ids]


def wants_absolute_paths(stack: ParticleStack) -> bool:
    """Whether writers should name images by absolute path (see the module docstring)."""
    return bool(stack.extra.get("absolute_image_paths"))


def absolute_image_names(stack: ParticleStack) -> np.ndarray | None:
    """RELION ``N@/absolute/path`` names (1-based, 6 digits) of every particle, or ``None``."""
    loc = image_locations(stack)
    if loc is None:
        return None
    numbers, paths = loc
    return np.array([f"{i + 1:06d}@{p}" for i, p in zip(numbers, paths, strict=True)], dtype=object)
