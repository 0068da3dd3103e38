"""Particle data for the engine: preprocessing, CTFs, seeded batch order, half-set splits.

The one image preprocessing and half-set split of cryospin: image sources (cryospin-io) read the
files as they are and only say whether a format's stacks need inverting.

Preprocessing (applied to every image the engine sees, also by the encoder):

* optional Fourier crop to the working box ``cfg.box`` (pixel size scales by ``L / box``);
* optional contrast inversion (``invert_contrast``; see docs/CONVENTIONS.md item 13);
* each image minus its background mean (pixels outside the radius ``L / 2`` circle), divided by the
  stack's background standard deviation (estimated once on up to 1,000 images).

Batches are drawn without replacement in an order fixed by ``(seed, epoch)``, so a resumed run sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryospin.core.ctf import ctf_from_params
from cryospin.core.errors import InputError
from cryospin.core.fourier import fft2_centered, fourier_crop, radius_grid
from cryospin.core.particles import ParticleStack

#: Preprocessed stacks up to this size are kept in memory (``cache_images``); larger ones are
#: read from disk per batch, so RAM stays flat in N.
CACHE_LIMIT_BYTES = 2 * 2**30


@dataclass
class Batch:
    """A batch: global particle indices ``(B,)``, real images, their transforms and CTFs."""

    indices: np.ndarray
    images: torch.Tensor  # (B, L, L) real, preprocessed
    fimages: torch.Tensor  # (B, L, L) complex centred transform of ``images``
    ctf: torch.Tensor  # (B, L, L)


def open_stack(path: str | Path, datadir: str | Path | None = None, **options) -> ParticleStack:
    """Open a particle file with the registered image source for its suffix.

    ``options`` go to the source's ``read`` (cryospin-io: ``stack``, the file replacing the single
    stack a metadata file names).
    """
    from cryospin.core.registry import get_registry

    path = Path(path)
    if not path.exists():
        raise InputError(f"particle file not found: {path}")
    source = get_registry().source_for(path)
    return source.read(path, Path(datadir) if datadir else None, **options)


def default_invert(stack: ParticleStack) -> bool:
    """Whether to invert the contrast of ``stack`` by default (docs/CONVENTIONS.md item 13).

    The forward model ``CTF * projection`` (:mod:`cryospin.core.ctf`, ``CTF(0) = -w``) predicts
    protein-dark images. The image source that reads the stack's file decides through its
    ``default_invert(stack)`` (cryospin-io: RELION ``.star`` invert, cryoSPARC ``.cs`` from
    ``blob/sign``, bare MRC no; :class:`~cryospin.core.interfaces.ImageSource`: no).
    """
    from cryospin.core.registry import get_registry

    return bool(get_registry().source_for(str(stack.path)).default_invert(stack))


class ParticleData:
    """Preprocessed access to a :class:`ParticleStack` (optionally a subset of its particles)."""

    def __init__(
        self,
        stack: ParticleStack,
        box: int | None = None,
        invert: bool | None = None,
        subset: np.ndarray | None = None,
        cache: bool = True,
        noise_std: float | None = None,
    ) -> None:
        self.stack = stack
        self.raw_box = int(stack.require_box())
        self.box = int(box or self.raw_box)
        if self.box > self.raw_box or self.box % 2:
            raise InputError(f"box {self.box} must be even and at most the stack's {self.raw_box}")
        self.pixel_size_A = float(stack.pixel_size_A) * self.raw_box / self.box
        self.invert = default_invert(stack) if invert is None else bool(invert)
        self.indices = (np.arange(len(stack)) if subset is None else np.asarray(subset)).astype(
            np.int64
        )
        r = radius_grid(self.box, 2)
        self._bg = r >= self.box / 2
        self._cache: torch.Tensor | None = None
        self.noise_std = noise_std if noise_std is not None else self._estimate_noise()
        if cache and len(self.indices) * self.box**2 * 4 <= CACHE_LIMIT_BYTES:
            chunks = [
                self._load(self.indices[i : i + 512]) for i in range(0, len(self.indices), 512)
            ]
            self._cache = torch.cat(chunks) if chunks else torch.zeros(0, self.box, self.box)
            self._pos = {int(g): k for k, g in enumerate(self.indices)}

    def __len__(self) -> int:
        return len(self.indices)

    def _raw(self, gidx: np.ndarray) -> torch.Tensor:
        arr = np.asarray(self.stack.images.read(np.asarray(gidx, dtype=np.int64)), dtype=np.float32)
        img = torch.from_numpy(arr)  # (n, L, L) float32
        if self.box != self.raw_box:
            img = fourier_crop(img, self.box)  # (n, box, box), mean preserved
        if self.invert:
            img = -img
        bg = img[:, self._bg]
        return img - bg.mean(-1)[:, None, None]

    def _estimate_noise(self) -> float:
        rng = np.random.default_rng(12345)
        n = min(1000, len(self.indices))
        pick = np.sort(rng.choice(self.indices, n, replace=False)) if n else self.indices
        std = float(self._raw(pick)[:, self._bg].std()) if n else 1.0
        return std if std > 0 else 1.0

    def _load(self, gidx: np.ndarray) -> torch.Tensor:
        return self._raw(gidx) / self.noise_std

    def images(self, gidx: np.ndarray) -> torch.Tensor:
        """Preprocessed real images ``(n, L, L)`` of the particles with global indices ``gidx``."""
        if self._cache is not None:
            return self._cache[[self._pos[int(g)] for g in gidx]]
        return self._load(gidx)

    def batch(self, gidx: np.ndarray, device: torch.device | str = "cpu") -> Batch:
        """Assemble a :class:`Batch` for global indices ``gidx``."""
        img = self.images(gidx).to(device)
        ctf = ctf_from_params(self.stack.ctf.subset(gidx), self.box, self.pixel_size_A).to(device)
        return Batch(np.asarray(gidx), img, fft2_centered(img), ctf)

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """Global indices in the (seeded) order of ``epoch``."""
        rng = np.random.default_rng([seed, epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def batches(self, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
        """Return the epoch's batches of global indices (the last one may be smaller)."""
        order = self.order(seed, epoch)
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def split_half_sets(stack: ParticleStack, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted particle indices of half-sets 1 and 2.

    The file's own labels (``stack.half_set``: ``rlnRandomSubset``, cryoSPARC
    ``alignments3D/split``) when both halves occur and every particle has label 1 or 2; otherwise a
    random split seeded by ``(seed, 7919)``, of sizes ``N // 2`` and ``N - N // 2``.
    """
    n = len(stack)
    if stack.half_set is not None:
        hs = np.asarray(stack.half_set)
        a, b = np.flatnonzero(hs == 1), np.flatnonzero(hs == 2)
        if len(a) and len(b) and len(a) + len(b) == n:
            return a, b
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
