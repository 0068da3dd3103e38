"""Reading and writing maps and poses through the registered I/O components.

Core never imports an I/O plugin. It asks the registered image sources (``registry`` kind
``image_source``) for these optional methods of :class:`~cryospin.core.interfaces.ImageSource`
and uses the first source, by name, that provides one (cryospin-io provides them all;
:meth:`~cryospin.core.registry.Registry.provider`):

* ``read_map(path) -> (volume (D, D, D) [z, y, x], voxel_size_A)``
* ``write_map(path, volume, voxel_size_A)``
* ``write_poses(path, stack, rotations (N, 3, 3), shifts_A (N, 2))`` - a particle file in the
  source's own format (the source whose suffix matches ``path``), original columns kept;
* ``write_poses_pkl(path, rotations, shifts_A, pixel_size_A, box)`` - cryoDRGN ``poses.pkl``;
* ``measure_contrast(stack) -> (mean, t)`` - centre minus background of a sample of images, in
  background standard deviations (> 0: protein-bright), and its t-value.

Errors: :class:`~cryospin.core.errors.CryospinError` when no installed plugin provides the method.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.errors import CryospinError


def _find(method: str, path: Path | None = None) -> Callable[..., Any]:
    """Return ``method`` of the first source providing it, or of the source reading ``path``."""
    from cryospin.core.registry import get_registry

    if path is None:
        return getattr(get_registry().provider(method), method)
    source = get_registry().source_for(path)
    if not source.provides(method):
        raise CryospinError(f"the image source of {path.name} does not provide {method}")
    return getattr(source, method)


def provides(method: str, path: str | Path | None = None) -> bool:
    """Whether an installed image source provides ``method``.

    With ``path`` (a file name, or a bare suffix such as ``".star"``): whether the source that
    reads such files does.
    """
    try:
        _find(method, None if path is None else Path(path))
    except CryospinError:
        return False
    return True


def read_map(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a cubic map ``(D, D, D)`` ``[z, y, x]`` (float32) and its voxel size (Å)."""
    vol, apix = _find("read_map")(Path(path))
    return np.asarray(vol, dtype=np.float32), float(apix)


def write_map(path: str | Path, volume: np.ndarray, voxel_size_A: float) -> None:
    """Write a real-space map ``(D, D, D)`` ``[z, y, x]`` with its voxel size (Å), atomically."""
    vol = np.ascontiguousarray(np.asarray(volume, dtype=np.float32))
    _find("write_map")(Path(path), vol, float(voxel_size_A))


def write_poses(path: str | Path, stack: Any, rotations: np.ndarray, shifts_A: np.ndarray) -> None:
    """Write a particle file (format by suffix): poses ``(N, 3, 3)``, origins ``(N, 2)`` in Å."""
    path = Path(path)
    _find("write_poses", path)(path, stack, rotations, shifts_A)


def write_poses_pkl(
    path: str | Path, rotations: np.ndarray, shifts_A: np.ndarray, pixel_size_A: float, box: int
) -> None:
    """Write a cryoDRGN ``poses.pkl``: ``(R (N, 3, 3), t (N, 2))``, ``t`` = origin px / box."""
    _find("write_poses_pkl")(Path(path), rotations, shifts_A, pixel_size_A, box)


def measure_contrast(stack: Any) -> tuple[float, float]:
    """Measured contrast of ``stack``: ``(mean, t)``, mean > 0 when the protein is bright."""
    mean, t = _find("measure_contrast")(stack)
    return float(mean), float(t)
