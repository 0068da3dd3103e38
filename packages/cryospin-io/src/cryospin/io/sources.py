"""The built-in image sources (registered in :mod:`cryospin.io.plugin`) and :func:`open_particles`.

Each source reads one family of files, chosen by suffix; :func:`open_particles` asks the
component registry for the file's source (:meth:`cryospin.core.registry.Registry.source_for`), so
a third-party plugin adds a format by registering an :class:`~cryospin.core.interfaces.ImageSource`
with its own suffixes. The three built-in sources also provide every optional service of the
interface (maps, ``poses.pkl``, contrast), through :class:`CryospinIOSource`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from cryospin.core.errors import InputError
from cryospin.core.interfaces import ImageSource
from cryospin.core.particles import CTFParams, ParticleStack


class CryospinIOSource(ImageSource):
    """cryospin-io's implementation of the optional services of an :class:`ImageSource`."""

    def read_map(self, path: Path) -> tuple[np.ndarray, float]:
        """Read a cubic map: :func:`cryospin.io.mrc.read_map`."""
        from cryospin.io.mrc import read_map

        return read_map(path)

    def write_map(self, path: Path, volume: np.ndarray, voxel_size_A: float) -> None:
        """Write a map: :func:`cryospin.io.mrc.write_map`."""
        from cryospin.io.mrc import write_map

        write_map(path, volume, voxel_size_A)

    def write_poses_pkl(
        self,
        path: Path,
        rotations: np.ndarray,
        shifts_A: np.ndarray,
        pixel_size_A: float,
        box: int,
    ) -> None:
        """Write a cryoDRGN ``poses.pkl``: :func:`cryospin.io.cryodrgn.write_poses_pkl`."""
        from cryospin.io.cryodrgn import write_poses_pkl

        write_poses_pkl(path, rotations, shifts_A, box, pixel_size_A)

    def default_invert(self, stack: ParticleStack) -> bool:
        """Contrast-inversion default: :func:`cryospin.io.contrast.default_invert`."""
        from cryospin.io.contrast import default_invert

        return default_invert(stack)

    def measure_contrast(self, stack: ParticleStack) -> tuple[float, float]:
        """Protein-bright (> 0) or dark: :func:`cryospin.io.contrast.measure_contrast`."""
        from cryospin.io.contrast import measure_contrast

        return measure_contrast(stack)


class RelionStarSource(CryospinIOSource):
    """RELION STAR particle files (3.0 to 5); see :mod:`cryospin.io.star`."""

    suffixes: ClassVar[tuple[str, ...]] = (".star",)

    def read(self, path: Path, datadir: Path | None = None, **options) -> ParticleStack:
        """Open a STAR file; options: ``stack`` (single-stack override), ``images``."""
        from cryospin.io.star import read_star

        return read_star(path, datadir=datadir, **options)

    def write_poses(
        self, path: Path, stack: ParticleStack, rotations: np.ndarray, shifts_A: np.ndarray
    ) -> None:
        """Write a RELION 3.1 STAR with these poses: :func:`cryospin.io.star.write_star`."""
        from cryospin.io.star_write import write_star

        write_star(path, stack, rotations, shifts_A)


class CryosparcSource(CryospinIOSource):
    """cryoSPARC ``.cs`` particle files; see :mod:`cryospin.io.cryosparc`."""

    suffixes: ClassVar[tuple[str, ...]] = (".cs",)

    def read(self, path: Path, datadir: Path | None = None, **options) -> ParticleStack:
        """Open a ``.cs`` file; options: ``stack`` (single-stack override), ``images``."""
        from cryospin.io.cryosparc import read_cs

        return read_cs(path, datadir=datadir, **options)

    def write_poses(
        self, path: Path, stack: ParticleStack, rotations: np.ndarray, shifts_A: np.ndarray
    ) -> None:
        """Write a ``.cs`` file with these poses: :func:`cryospin.io.cryosparc.write_cs`."""
        from cryospin.io.cryosparc import write_cs

        write_cs(path, stack, rotations, shifts_A)


class MrcStackSource(CryospinIOSource):
    """A bare MRC stack: images and pixel size from the header, no CTF (all NaN), no poses."""

    suffixes: ClassVar[tuple[str, ...]] = (".mrcs", ".mrc")

    def read(self, path: Path, datadir: Path | None = None, **options) -> ParticleStack:
        """Open a stack; ``datadir`` and ``stack`` do not apply; ``images=False`` is accepted."""
        from cryospin.io.checks import PIXEL_SIZE
        from cryospin.io.mrc import MrcImageReader, read_stack_header

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        header = read_stack_header(path, bare=True)
        reader = MrcImageReader(
            [path], np.zeros(header.n, np.int32), np.arange(header.n), header.box
        )
        pixel = header.pixel_size_A
        if not PIXEL_SIZE.contains(np.array([pixel]))[0]:
            raise InputError(
                f"{path}: header pixel size is {pixel:g} (cella / mx); expected "
                f"{PIXEL_SIZE.describe()} (or give the particles as a STAR or .cs file)"
            )
        n = header.n
        nan = np.full(n, np.nan)
        ctf = CTFParams(*(nan.copy() for _ in range(7)))
        return ParticleStack(
            path=path,
            images=reader,
            box=reader.box,
            pixel_size_A=pixel,
            ctf=ctf,
            optics_group=np.ones(n, dtype=np.int64),
            extra={"format": "mrc-stack", "has_ctf": False},
        )


def open_particles(
    path: str | Path,
    datadir: str | Path | None = None,
    *,
    stack: str | Path | None = None,
    images: bool = True,
) -> ParticleStack:
    """Open particles with the image source registered for ``path``'s suffix.

    Args:
        path: a ``.star``, ``.cs``, ``.mrcs``/``.mrc`` file (or any suffix a plugin registers).
        datadir: folder searched for image stacks not found beside the metadata file.
        stack: stack file replacing the single stack a metadata file names (e.g. the TRPV1
            STAR names ``./batch_0_restacked.mrc``, shipped as ``trpv1_small_stack.mrcs``).
        images: ``False`` opens the metadata only.

    Raises:
        InputError: no source handles the suffix, the file is missing, or it is malformed.
    """
    from cryospin.core.registry import get_registry

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    source = get_registry().source_for(path)
    # Only non-default options: a third-party source may implement just read(path, datadir).
    options: dict[str, object] = {}
    if not images:
        options["images"] = False
    if stack is not None:
        options["stack"] = Path(stack)
    return source.read(path, Path(datadir) if datadir else None, **options)
