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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from cryospin.core.engine.data import Batch, ParticleData
    from cryospin.core.engine.stages import EngineContext
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
        self._check_crop(size)
        if self.supports_crop:
            return self(rotations, size=size)
        lo = self.box // 2 - size // 2
        return self(rotations)[..., lo : lo + size, lo : lo + size]

    def _check_crop(self, size: int) -> None:
        if size % 2 or not 0 < size <= self.box:
            raise ValueError(f"slice crop must be even and in (0, {self.box}], got {size}")

    def check_mask(self, mask: torch.Tensor) -> int:
        """Return the side ``c`` of a boolean ``(c, c)`` crop mask (see :meth:`masked_slices`).

        Raises:
            ValueError: ``mask`` is not a square boolean array, or ``c`` is odd or larger than
                the box.
        """
        c = mask.shape[-1]
        if mask.ndim != 2 or mask.shape[0] != c or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean (c, c) array, got {tuple(mask.shape)}")
        self._check_crop(c)
        return c

    #: whether :meth:`forward` takes ``mask`` and then computes only the masked pixels
    supports_points: ClassVar[bool] = False

    def masked_slices(self, rotations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return :meth:`slices` read at the pixels of ``mask``: ``(..., P)`` complex.

        ``mask`` is a boolean ``(c, c)`` frequency mask of the central crop (``c`` even, at most
        ``L``; DC at ``c // 2``); the ``P`` values come in row-major order, as
        ``slices(rotations, c)[..., mask]``. A decoder with :attr:`supports_points` computes only
        those pixels (``self(rotations, mask=mask)``, which also passes through a
        DistributedDataParallel wrapper); any other computes the crop and reads it.

        Raises:
            ValueError: ``mask`` is not square, or its side is odd or larger than the box.
        """
        c = self.check_mask(mask)
        if self.supports_points:
            return self(rotations, mask=mask)
        return self.slices(rotations, c)[..., mask]

    @abstractmethod
    def to_map(self) -> torch.Tensor:
        """Return the full real-space map ``(L, L, L)`` indexed ``[z, y, x]``, float."""


@dataclass
class StepResult:
    """Outcome of one :meth:`PoseStage.train_step` on a batch of ``B`` images.

    Attributes:
        loss: the batch's loss (the value optimised).
        rotations: ``(B, 3, 3)`` on the CPU: each image's pose after the step (RELION A).
        winners: ``(B,)`` the winning candidate per image, or ``None`` (one candidate).
        shifts_px: ``(B, 2)`` on the CPU: each image's shift ``(x, y)`` in pixels, or ``None``.
    """

    loss: float
    rotations: torch.Tensor
    winners: np.ndarray | None = None
    shifts_px: torch.Tensor | None = None


class PoseStage(ABC):
    """A pose-inference stage of the training engine, playing one role of the stage schedule.

    The run configuration names the registered stage of each role (``amortized_stage``,
    ``direct_stage``; :func:`cryospin.core.engine.stages.build_stages`). The engine calls
    :meth:`setup` when the stage starts (or resumes), :meth:`train_step` once per batch, and
    saves :meth:`state_dict` in every checkpoint. ``ctx`` is the
    :class:`~cryospin.core.engine.stages.EngineContext` (models, optimisers, pose table, mask)
    and ``batch`` a :class:`~cryospin.core.engine.data.Batch`. The amortized role also needs the
    hand-over at the switch: a :class:`CandidateStage`.

    Subclasses set the class variables ``name`` and ``Config`` (a :class:`ComponentConfig`, the
    stage's own settings: ``<role>_stage_config`` in the run configuration); the registry refuses
    a stage class without them or with an abstract method left. The rules are checked by
    :mod:`cryospin.core.testing.stages`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]

    def __init__(self, config: ComponentConfig | None = None) -> None:
        self.config = self.Config() if config is None else config

    @abstractmethod
    def setup(self, ctx: EngineContext) -> None:
        """Prepare the stage when it starts or resumes (e.g. set learning rates)."""

    @abstractmethod
    def train_step(self, ctx: EngineContext, batch: Batch) -> StepResult:
        """Take one optimisation step on ``batch``: the loss and the batch's poses after it.

        Every role trains the volume (the decoder, through ``ctx.dec_opt``).
        """

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Return the stage's own state for checkpoints (models, optimisers, table excluded).

        Tensors come back on the CPU. In a multi-process run rank 0's state is saved and every
        rank loads it, so it must be the same on every rank: per-particle state belongs in the
        pose table.
        """

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; called on resume after :meth:`setup`."""


class CandidateStage(PoseStage):
    """A stage that can play the amortized role: it hands its poses over at the switch."""

    @abstractmethod
    def best_candidates(
        self,
        ctx: EngineContext,
        data: ParticleData,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
        search: int = 0,
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None, np.ndarray]:
        """One pass over ``data`` (no training): each particle's best pose, for the pose table.

        ``progress(n)`` is called after each batch of ``n`` images; ``search = G > 0`` asks the
        stage to also try ``G`` grid rotations per particle
        (:mod:`cryospin.core.engine.pose_search`).

        Returns:
            ``(global indices (n,), rotations (n, 3, 3), shifts_px (n, 2) or None,
            winning candidate (n,))``, tensors on the CPU.
        """


class ImageSource(ABC):
    """Reads particle files of one format, chosen by suffix, and the I/O services core uses.

    Core never imports an I/O plugin: it finds the source of a particle file with
    :meth:`cryospin.core.registry.Registry.source_for` (the longest registered suffix the file's
    lower-case name ends with) and the source of a service with
    :meth:`~cryospin.core.registry.Registry.provider` (:mod:`cryospin.core.engine.io_bridge`).
    A source must set ``suffixes`` and implement :meth:`read`; every other method is optional:
    it is provided when the subclass overrides it (:meth:`provides`), else it raises
    :class:`NotImplementedError`. :meth:`default_invert` defaults to ``False`` (no inversion).
    """

    #: lower-case file-name endings this source reads, e.g. ``(".star",)``
    suffixes: ClassVar[tuple[str, ...]]
    #: the methods a source may provide, beyond :meth:`read` and :meth:`default_invert`
    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "write_poses",
        "read_map",
        "write_map",
        "write_poses_pkl",
        "measure_contrast",
    )

    @classmethod
    def provides(cls, method: str) -> bool:
        """Whether this source implements the optional ``method`` (one of :attr:`OPTIONAL`)."""
        if method not in ImageSource.OPTIONAL:
            raise ValueError(f"'{method}' is not an optional ImageSource method")
        return getattr(cls, method) is not getattr(ImageSource, method)

    @abstractmethod
    def read(self, path: Path, datadir: Path | None = None, **options: Any) -> ParticleStack:
        """Open ``path`` as a lazily loaded :class:`ParticleStack`.

        ``options`` are source-specific (cryospin-io: ``stack``, ``images``); a caller passes
        only options it sets.

        Raises:
            cryospin.core.errors.InputError: the file is malformed (message names file and field).
        """

    def default_invert(self, stack: ParticleStack) -> bool:
        """Whether ``stack`` needs contrast inversion for the forward model (default ``False``).

        The forward model predicts protein-dark images (docs/CONVENTIONS.md item 13).
        """
        return False

    def write_poses(
        self, path: Path, stack: ParticleStack, rotations: np.ndarray, shifts_A: np.ndarray
    ) -> None:
        """Write ``stack``'s particle file in this format with new poses, other columns kept.

        ``rotations`` ``(N, 3, 3)`` (RELION A), ``shifts_A`` ``(N, 2)`` ``(x, y)`` in Å.
        """
        raise NotImplementedError(f"{type(self).__name__} does not write poses")

    def read_map(self, path: Path) -> tuple[np.ndarray, float]:
        """Read a cubic map: ``(volume (D, D, D) [z, y, x], voxel size in Å)``."""
        raise NotImplementedError(f"{type(self).__name__} does not read maps")

    def write_map(self, path: Path, volume: np.ndarray, voxel_size_A: float) -> None:
        """Write a real-space map ``(D, D, D)`` ``[z, y, x]`` with its voxel size (Å)."""
        raise NotImplementedError(f"{type(self).__name__} does not write maps")

    def write_poses_pkl(
        self,
        path: Path,
        rotations: np.ndarray,
        shifts_A: np.ndarray,
        pixel_size_A: float,
        box: int,
    ) -> None:
        """Write a cryoDRGN ``poses.pkl``: rotations ``(N, 3, 3)``, shifts ``(N, 2)`` in Å."""
        raise NotImplementedError(f"{type(self).__name__} does not write poses.pkl")

    def measure_contrast(self, stack: ParticleStack) -> tuple[float, float]:
        """Measure the contrast of ``stack``: ``(mean, t)``, mean > 0 when protein-bright.

        ``mean``: centre minus background of a sample of images, in background standard
        deviations; ``t``: its t-value.
        """
        raise NotImplementedError(f"{type(self).__name__} does not measure contrast")
