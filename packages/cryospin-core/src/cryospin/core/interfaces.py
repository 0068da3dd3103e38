"""Abstract interfaces of the pluggable components: encoders, decoders, pose stages, image sources.

Conventions shared by every implementation (see also README "Conventions"):

* Images are real-space, float, shape ``(B, L, L)`` indexed ``[y, x]``; the box ``L`` is even.
* Fourier-space images are centred (DC at index ``L // 2``), complex, ``[ky, kx]``.
* A rotation ``R`` (3x3) is RELION's matrix A: it maps map (volume) coordinates to image
  coordinates, acting on column vectors. The central slice of a pose ``R`` samples the volume's
  transform at ``R^T k`` for 2D frequency ``k = (kx, ky, 0)`` (row-vector form ``k @ R``).
* Shifts ``(..., 2)`` are ``(x, y)`` in Å: the translation of the image content relative to the
  centred projection (see :func:`cryospin.core.slicing.phase_shift`).
* Volumes are ``(D, D, D)`` indexed ``[z, y, x]`` (MRC order).

Source: paper Sec. 4 (encoder/decoder split, Supp. B for the baselines); cryoJAX's
abstract-interface and concrete-leaf design.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from cryospin.core.particles import ParticleStack


class ComponentConfig(BaseModel):
    """Base of every component's pydantic ``Config``: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class PoseCandidates:
    """Candidate poses proposed by an encoder for a batch of images.

    Attributes:
        rotations: ``(B, M, 3, 3)`` rotation matrices (RELION A convention).
        shifts_A: ``(B, M, 2)`` in-plane shifts ``(x, y)`` in Å, or ``None`` when the encoder
            does not estimate translations.
    """

    rotations: torch.Tensor
    shifts_A: torch.Tensor | None = None


class Encoder(torch.nn.Module, ABC):
    """Images ``(B, L, L)`` -> :class:`PoseCandidates` with ``M`` candidates per image.

    Subclasses set ``Config`` (a :class:`ComponentConfig`) and take ``(config, box, pixel_size_A)``.
    """

    Config: ClassVar[type[ComponentConfig]]

    def __init__(self, config: ComponentConfig, box: int, pixel_size_A: float) -> None:
        super().__init__()
        self.config = config
        self.box = box
        self.pixel_size_A = pixel_size_A

    @property
    @abstractmethod
    def n_candidates(self) -> int:
        """Number ``M`` of candidate poses per image."""

    @abstractmethod
    def forward(self, images: torch.Tensor) -> PoseCandidates:
        """Propose poses for real-space images ``(B, L, L)``."""


class Decoder(torch.nn.Module, ABC):
    """The volume model: rotations ``(..., 3, 3)`` -> centred Fourier slices ``(..., L, L)``.

    Subclasses set ``Config`` and take ``(config, box, pixel_size_A)``.
    """

    Config: ClassVar[type[ComponentConfig]]

    def __init__(self, config: ComponentConfig, box: int, pixel_size_A: float) -> None:
        super().__init__()
        self.config = config
        self.box = box
        self.pixel_size_A = pixel_size_A

    @abstractmethod
    def forward(self, rotations: torch.Tensor) -> torch.Tensor:
        """Complex centred Fourier slices ``(..., L, L)`` (DC at ``L // 2``) for the rotations."""

    #: whether :meth:`forward` takes ``size`` and then computes only the central crop
    supports_crop: ClassVar[bool] = False

    def slices(self, rotations: torch.Tensor, size: int) -> torch.Tensor:
        """Return the central ``(..., size, size)`` crop of :meth:`forward` (DC at ``size // 2``).

        ``size`` is even and at most ``L``: the frequencies ``-size/2 .. size/2 - 1`` of each
        axis. A decoder with :attr:`supports_crop` computes only the crop
        (``self(rotations, size=size)``, which also passes through a DistributedDataParallel
        wrapper); any other computes the full slices and crops them.

        Raises:
            ValueError: ``size`` is odd or larger than the box.
        """
        L = self.box
        if size % 2 or not 0 < size <= L:
            raise ValueError(f"slice crop must be even and in (0, {L}], got {size}")
        if self.supports_crop:
            return self(rotations, size=size)
        lo = L // 2 - size // 2
        return self(rotations)[..., lo : lo + size, lo : lo + size]

    @abstractmethod
    def to_map(self) -> torch.Tensor:
        """Return the full real-space map ``(L, L, L)`` indexed ``[z, y, x]``, float."""


class PoseStage(ABC):
    """A pose-inference stage of the training engine (e.g. ``amortized``, ``direct``).

    The engine (:mod:`cryospin.core.engine`) defines the methods a stage provides; see there.
    """

    Config: ClassVar[type[ComponentConfig]]


class ImageSource(ABC):
    """Reads particle stacks of one file format (chosen by suffix) and writes poses back to it."""

    suffixes: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def read(self, path: Path, datadir: Path | None = None) -> ParticleStack:
        """Open ``path`` as a lazily loaded :class:`ParticleStack`.

        Raises:
            cryospin.core.errors.InputError: the file is malformed (message names file and field).
        """
