"""Pieces shared by the metadata readers: opening the referenced stacks, pixel and box rules."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cryospin.core.errors import InputError
from cryospin.core.particles import ImageReader
from cryospin.io.checks import PIXEL_SIZE
from cryospin.io.mrc import MrcImageReader, StackHeader, open_stacks
from cryospin.io.paths import resolve_stack_path
from cryospin.io.rescale import SAME_PIXEL_RTOL, RescaledReader


class NoImages:
    """Stand-in :class:`~cryospin.core.particles.ImageReader` for metadata opened without images.

    ``len`` is N; ``read`` raises :class:`InputError` saying the images were not opened.
    """

    def __init__(self, n: int, source: Path):
        self.n = int(n)
        self.source = source

    def __len__(self) -> int:
        return self.n

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Raise :class:`InputError`: there are no images to read."""
        raise InputError(f"{self.source}: opened as metadata only; its images were not opened")


def open_referenced_stacks(
    source: Path,
    names: np.ndarray,
    indices: np.ndarray,
    datadir: Path | None,
    stack: Path | None,
    field: str,
) -> tuple[MrcImageReader, list[StackHeader]]:
    """Open the stacks named per particle by a metadata file ``source``.

    ``names`` ``(N,)`` are stack paths as written in the metadata, ``indices`` ``(N,)`` 0-based
    image numbers (from metadata ``field``, for messages). ``stack`` overrides the file when the
    metadata names exactly one stack (its upstream name often differs from the file at hand);
    otherwise paths resolve as described in :mod:`cryospin.io.paths`.

    Raises:
        InputError: a stack is missing (listing the paths tried), ``stack`` is given while the
            metadata names several stacks, an index is out of range, or a stack is malformed.
    """
    unique, file_ids = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    if stack is not None:
        if len(unique) != 1:
            raise InputError(
                f"{source}: --stack replaces a single stack, but the file names {len(unique)} "
                f"stacks ({', '.join(unique[:3])}{', ...' if len(unique) > 3 else ''}); "
                "use --datadir instead"
            )
        if not Path(stack).is_file():
            raise InputError(f"{stack}: stack file given by --stack does not exist")
        paths = [Path(stack)]
    else:
        paths = [resolve_stack_path(name, source.parent, datadir, source) for name in unique]
    return open_stacks(paths, file_ids.reshape(-1), indices, source, field)


def _by_value(values: np.ndarray, groups: np.ndarray | None, unit: str) -> str:
    """``"1.24 Å (groups 2, 5), 1.25 Å (groups 1, 3)"``: each distinct value and its members."""
    parts = []
    for value in np.unique(values):
        sel = values == value
        if groups is None:
            parts.append(f"{value:g} {unit} ({int(sel.sum())} particles)")
        else:
            members = np.unique(np.asarray(groups)[sel])
            shown = ", ".join(map(str, members[:8])) + (", ..." if len(members) > 8 else "")
            parts.append(f"{value:g} {unit} (group{'s' if len(members) > 1 else ''} {shown})")
    return ", ".join(parts)


def check_one_box(
    source: Path, sizes: np.ndarray | None, groups: np.ndarray | None, field: str
) -> None:
    """Refuse particles whose metadata gives different box sizes (optics groups).

    Raises:
        InputError: ``sizes`` ``(N,)`` holds more than one value; names the field and each
            box size with its optics groups.
    """
    if sizes is None or len(np.unique(sizes)) < 2:
        return
    raise InputError(
        f"{source}: optics groups differ in box size ({field}): "
        f"{_by_value(np.asarray(sizes, dtype=np.float64), groups, 'px')}; expected one box size "
        "(re-extract at one box, or split the file by optics group)"
    )


def choose_pixel_size(
    source: Path,
    per_particle: np.ndarray | None,
    headers: list[StackHeader],
    field: str,
    groups: np.ndarray | None = None,
) -> float:
    """Return the working pixel size: from metadata when given (``per_particle``), else the header.

    Metadata wins over a disagreeing header, with a warning; a header of 0 means "unset".
    When particles (optics groups ``groups``) differ in pixel size, the smallest is the working
    pixel size and a warning names every size and its groups; the images of the other groups
    are Fourier-rescaled to it by :func:`rescale_to_working` (see :mod:`cryospin.io.rescale`).

    Raises:
        InputError: a pixel size is missing everywhere or outside
            :data:`cryospin.io.checks.PIXEL_SIZE` (names the row and field).
    """
    if per_particle is not None:
        values = np.asarray(per_particle, dtype=np.float64)
        bad = ~PIXEL_SIZE.contains(values)
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError(
                f"{source}: row {row + 1}: {field} gives pixel size {values[row]:g}; "
                f"expected {PIXEL_SIZE.describe()}"
            )
        pixel = float(values.min())
        if values.max() > pixel * (1 + SAME_PIXEL_RTOL):
            warnings.warn(
                f"{source}: optics groups differ in pixel size ({field}): "
                f"{_by_value(values, groups, 'Å')}; images are Fourier-rescaled to the "
                f"smallest, {pixel:g} Å",
                stacklevel=3,
            )
        for h in headers:
            if h.pixel_size_A > 0 and not np.isclose(values, h.pixel_size_A, rtol=1e-3).any():
                warnings.warn(
                    f"{h.path}: header pixel size {h.pixel_size_A:g} Å disagrees with {field} "
                    f"{pixel:g} Å in {source.name}; using the metadata",
                    stacklevel=3,
                )
        return pixel
    header_sizes = {h.pixel_size_A for h in headers}
    if not headers or not PIXEL_SIZE.contains(np.array(sorted(header_sizes))).all():
        raise InputError(
            f"{source}: no usable pixel size: the metadata has no {field} and the stack "
            f"header gives {', '.join(f'{p:g}' for p in sorted(header_sizes)) or 'none'}; "
            f"expected {PIXEL_SIZE.describe()}"
        )
    if len(header_sizes) > 1:
        raise InputError(
            f"{source}: stack headers give different pixel sizes "
            f"({', '.join(f'{h.path.name}: {h.pixel_size_A:g} Å' for h in headers[:4])}) and "
            f"the metadata has no {field}; expected one pixel size (add {field})"
        )
    return headers[0].pixel_size_A


def mixed_pixel_sizes(per_particle: np.ndarray | None, working_A: float) -> dict:
    """``{"pixel_sizes_A": (N,)}`` for ``ParticleStack.extra`` when sizes differ, else ``{}``.

    Writers (:mod:`cryospin.io.star_write`) give each particle its own file pixel size back.
    """
    if per_particle is None:
        return {}
    sizes = np.asarray(per_particle, dtype=np.float64)
    if np.allclose(sizes, working_A, rtol=SAME_PIXEL_RTOL, atol=0):
        return {}
    return {"pixel_sizes_A": sizes}


def rescale_to_working(
    reader: ImageReader, box: int, per_particle: np.ndarray | None, working_A: float
) -> ImageReader:
    """``reader`` with every image at ``working_A`` Å per pixel (unchanged if all already are).

    ``per_particle`` ``(N,)`` are the particles' pixel sizes from the metadata (``None``: the
    header's single size). See :class:`cryospin.io.rescale.RescaledReader`.
    """
    if per_particle is None:
        return reader
    sizes = np.asarray(per_particle, dtype=np.float64)
    if np.allclose(sizes, working_A, rtol=SAME_PIXEL_RTOL, atol=0):
        return reader
    return RescaledReader(reader, box, sizes, working_A)
