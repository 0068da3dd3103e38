"""The in-memory description of a particle stack, shared by image sources and the engine.

Image sources (:class:`cryospin.core.interfaces.ImageSource`, provided by plugins such as
cryospin-io) build a :class:`ParticleStack`; the engine reads images lazily through
:class:`ImageReader`, so RAM stays flat in the number of particles N.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cryospin.core.errors import InputError


class ImageReader(Protocol):
    """Lazy access to a stack's images, in metadata (particle) order.

    ``len(reader)`` is N; ``reader.read(indices)`` returns float32 ``(n, L, L)`` real-space images
    indexed ``[y, x]`` for the integer particle indices, reading only those images from disk.
    """

    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Return float32 images ``(n, L, L)`` for the particle ``indices`` ``(n,)``."""
        ...


@dataclass
class CTFParams:
    """Per-particle CTF parameters, each a float64 array of shape ``(N,)``.

    Units follow RELION: defocus U/V in Å, defocus angle (astigmatism azimuth) in degrees,
    voltage in kV, spherical aberration Cs in mm, amplitude contrast ``w`` (0-1), phase shift in
    degrees, B-factor in Å^2. Source: RELION STAR conventions (rlnDefocusU, ...).
    """

    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    defocus_angle_deg: np.ndarray
    voltage_kV: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_deg: np.ndarray
    bfactor_A2: np.ndarray | None = None

    def subset(self, indices: np.ndarray) -> CTFParams:
        """Return the parameters of the particles at ``indices``."""
        fields: dict[str, Any] = {
            k: (None if v is None else np.asarray(v)[indices]) for k, v in self.__dict__.items()
        }
        return CTFParams(**fields)


@dataclass
class ParticleStack:
    """N particles of box L at one pixel size, with CTFs and optional poses.

    Attributes:
        path: the metadata (or stack) file it was read from.
        images: lazy :class:`ImageReader` over the N images.
        box: image side L in pixels (``None`` only for metadata opened without its images
            whose file does not state the box).
        pixel_size_A: pixel size in Å (NaN only for metadata opened without its images whose
            file does not state it).
        ctf: per-particle :class:`CTFParams`.
        rotations: ``(N, 3, 3)`` float64 RELION A matrices, or ``None`` when no poses are known.
        shifts_A: ``(N, 2)`` RELION origins ``(rlnOriginXAngst, rlnOriginYAngst)`` in Å, or
            ``None``.
        optics_group: ``(N,)`` int optics-group numbers (1 when the file has none).
        half_set: ``(N,)`` int half-set labels 1/2 (rlnRandomSubset), or ``None``.
        metadata: the original per-particle rows (a pandas DataFrame), kept for writing back.
        optics: the original optics table (DataFrame) or ``None``.
    """

    path: Path
    images: ImageReader
    box: int | None
    pixel_size_A: float
    ctf: CTFParams
    rotations: np.ndarray | None = None
    shifts_A: np.ndarray | None = None
    optics_group: np.ndarray | None = None
    half_set: np.ndarray | None = None
    metadata: Any = None
    optics: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def require_box(self) -> int:
        """Return the image side L in pixels, for code that needs the images' size.

        Raises:
            InputError: the box is unknown (metadata opened without its images whose file does
                not state the box).
        """
        if self.box is None:
            raise InputError(f"{self.path}: box size unknown: open the stack with its images")
        return self.box

    def subset(self, indices: np.ndarray) -> ParticleStack:
        """Return the particles at ``indices`` ``(k,)`` (0-based, in that order) as a new stack.

        Images are read through a :class:`SubsetReader`; the CTF, poses, shifts, optics groups,
        half-sets, the metadata rows (a pandas DataFrame or a structured array) and
        ``extra["image_names"]`` are cut to the same rows. Used by ``cryospin run --ind``.

        Raises:
            InputError: an index is out of range or appears twice.
        """
        sel = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if sel.size and (sel.min() < 0 or sel.max() >= n):
            bad = sel[(sel < 0) | (sel >= n)][0]
            raise InputError(f"{self.path}: particle index {bad} out of range for {n} particles")
        uniq, counts = np.unique(sel, return_counts=True)
        if (counts > 1).any():
            raise InputError(f"{self.path}: particle index {uniq[counts > 1][0]} selected twice")

        def cut(values: Any) -> Any:
            return None if values is None else np.asarray(values)[sel]

        meta = self.metadata
        if meta is not None:
            meta = meta.iloc[sel].reset_index(drop=True) if hasattr(meta, "iloc") else meta[sel]
        extra = dict(self.extra)
        if "image_names" in extra:
            extra["image_names"] = np.asarray(extra["image_names"], dtype=object)[sel]
        return ParticleStack(
            path=self.path,
            images=SubsetReader(self.images, sel),
            box=self.box,
            pixel_size_A=self.pixel_size_A,
            ctf=self.ctf.subset(sel),
            rotations=cut(self.rotations),
            shifts_A=cut(self.shifts_A),
            optics_group=cut(self.optics_group),
            half_set=cut(self.half_set),
            metadata=meta,
            optics=self.optics,
            extra=extra,
        )


class SubsetReader:
    """An :class:`ImageReader` over particles ``sel`` ``(k,)`` of another reader ``base``.

    Particle ``i`` of this reader is particle ``sel[i]`` of ``base``; writers that name image
    files look through it (``base`` and ``sel`` are public).
    """

    def __init__(self, base: ImageReader, sel: np.ndarray) -> None:
        self.base = base
        self.sel = np.asarray(sel, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sel)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Float32 images ``(n, L, L)`` of this reader's particles ``indices``."""
        return self.base.read(self.sel[np.asarray(indices, dtype=np.int64)])


class ArrayReader:
    """An :class:`ImageReader` over images held in memory: ``images`` ``(N, L, L)``.

    For toy stacks (tests, contract checks); real stacks are read lazily from disk.
    """

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Images ``(n, L, L)`` of the particles ``indices``."""
        return self.images[np.asarray(indices)]
