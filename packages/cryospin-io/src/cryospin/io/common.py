"""Pieces shared by the metadata readers: opening the referenced stacks, pixel-size rules."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cryospin.core.errors import InputError
from cryospin.core.particles import ParticleStack
from cryospin.io.mrc import MrcImageReader, StackHeader, open_stacks
from cryospin.io.paths import resolve_stack_path


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


def file_geometry(stack: ParticleStack) -> tuple[int | None, float]:
    """Box and pixel size of the images the stack's file names (before any preprocessing).

    :func:`cryospin.io.preprocess.preprocess` changes ``stack.box`` and ``stack.pixel_size_A``;
    writers describe the files on disk, so they use the values recorded before that.
    """
    return (
        stack.extra.get("original_box", stack.box),
        stack.extra.get("original_pixel_size_A", stack.pixel_size_A),
    )


def open_referenced_stacks(
    source: Path,
    names: np.ndarray,
    indices: np.ndarray,
    datadir: Path | None,
    stack: Path | None,
) -> tuple[MrcImageReader, list[StackHeader]]:
    """Open the stacks named per particle by a metadata file ``source``.

    ``names`` ``(N,)`` are stack paths as written in the metadata, ``indices`` ``(N,)`` 0-based
    image numbers. ``stack`` overrides the file when the metadata names exactly one stack (its
    upstream name often differs from the file at hand); otherwise paths resolve as described in
    :mod:`cryospin.io.paths`.

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
    return open_stacks(paths, file_ids.reshape(-1), indices, source)


def choose_pixel_size(
    source: Path, per_particle: np.ndarray | None, headers: list[StackHeader], field: str
) -> float:
    """Return the pixel size: from metadata when given (``per_particle``), else the header.

    Metadata wins over a disagreeing header, with a warning; a header of 0 means "unset".
    Several metadata pixel sizes (optics groups) differing by more than 1% give a warning and
    the most common one is used.

    Raises:
        InputError: a pixel size is zero, negative or missing everywhere (names the field).
    """
    if per_particle is not None:
        values = np.asarray(per_particle, dtype=np.float64)
        bad = ~(values > 0) | ~np.isfinite(values)
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError(
                f"{source}: row {row + 1}: {field} gives pixel size {values[row]}; "
                "expected a positive size in Å"
            )
        sizes, counts = np.unique(values, return_counts=True)
        pixel = float(sizes[np.argmax(counts)])
        if sizes.max() > 1.01 * sizes.min():
            warnings.warn(
                f"{source}: pixel sizes differ between particles ({sizes.min():g} to "
                f"{sizes.max():g} Å, from {field}); using the most common, {pixel:g} Å",
                stacklevel=3,
            )
        for h in headers:
            if h.pixel_size_A > 0 and abs(h.pixel_size_A - pixel) > 1e-3 * pixel:
                warnings.warn(
                    f"{h.path}: header pixel size {h.pixel_size_A:g} Å disagrees with {field} "
                    f"{pixel:g} Å in {source.name}; using the metadata",
                    stacklevel=3,
                )
        return pixel
    header_sizes = {h.pixel_size_A for h in headers}
    if not headers or min(header_sizes) <= 0:
        raise InputError(
            f"{source}: no pixel size: the metadata has no {field} and the stack header's "
            "pixel size is 0; expected a positive size in Å"
        )
    if len(header_sizes) > 1:
        warnings.warn(
            f"{source}: stack headers give different pixel sizes {sorted(header_sizes)}; "
            f"using {headers[0].pixel_size_A:g} Å",
            stacklevel=3,
        )
    return headers[0].pixel_size_A
