"""Image preprocessing applied lazily, batch by batch, as images are read.

Steps, in order (each optional): background normalisation, soft circular window, Fourier-crop
downsampling to ``box``, contrast inversion. :func:`preprocess` wraps a
:class:`~cryospin.core.particles.ParticleStack` so the engine reads processed images with RAM
flat in N; nothing is precomputed.

* **Normalisation** (RELION-style): per image, subtract the mean and divide by the standard
  deviation of the pixels outside a circle of radius ``background_radius`` (a fraction of
  ``L / 2``), so the solvent background has mean 0 and variance 1.
* **Window**: multiply by a soft circular mask, 1 inside ``window_inner`` and a raised cosine
  falling to 0 at ``window_outer`` (fractions of ``L / 2``; cryoDRGN's default 0.85 to 0.99).
* **Downsampling**: :func:`cryospin.core.fourier.fourier_downsample` (spectrum crop, mean
  preserved); the pixel size becomes ``apix * L / box``. The target box must be even (the
  conventions of :mod:`cryospin.core.interfaces`) and at most ``L``.
* **Contrast inversion** (multiply by -1). Whether a stack needs it depends on how the stack was
  written, not on the format: see :data:`INVERT_DEFAULT` and :func:`default_invert`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from cryospin.core.errors import ConfigError, InputError
from cryospin.core.fourier import fourier_downsample
from cryospin.core.particles import ImageReader, ParticleStack

#: Default of the contrast-inversion flag per format (see :func:`default_invert`).
INVERT_DEFAULT = {"relion-star": True, "cryosparc-cs": False, "mrc-stack": False}


def default_invert(stack: ParticleStack) -> bool:
    """Default of the ``--invert`` flag for ``stack``, for the core's forward model.

    The forward model is ``image = CTF * projection`` with :mod:`cryospin.core.ctf` (cryoDRGN's
    sign, ``CTF(0) = -w``) and a protein-positive volume, so it predicts protein-*dark* images,
    as in raw micrographs. Established on real data (tests/io/test_trpv1_end_to_end.py): the
    raw TRPV1 RELION images correlate *negatively* with ``CTF * projection`` (-0.18 to -0.26),
    positively once inverted.

    * **RELION** (``.star``): ``True``. RELION's extraction inverts contrast by default, so its
      stacks are protein-bright (RELION's own CTF has the opposite sign). cryoDRGN inverts by
      default for the same reason.
    * **cryoSPARC** (``.cs``): from ``blob/sign``; cryoSPARC multiplies images by it to make
      protein bright, so ``-1`` marks protein-dark stacks (no inversion) and ``+1``
      protein-bright ones (inversion). Without ``blob/sign``: ``False``.
    * **bare MRC stacks**: ``False`` (no metadata; the raw-micrograph convention, which is also
      the simulator's).

    A stack can break its format's habit (e.g. EMPIAR-10076's RELION 3.0 STAR names a
    protein-dark stack): :func:`contrast_mismatch` detects an obvious disagreement.
    """
    fmt = stack.extra.get("format", "mrc-stack")
    if fmt == "cryosparc-cs" and stack.extra.get("blob_sign") is not None:
        return float(stack.extra["blob_sign"]) > 0
    return INVERT_DEFAULT.get(fmt, False)


def measure_contrast(stack: ParticleStack, n: int = 64, seed: int = 0) -> tuple[float, float]:
    """Measure whether particles are brighter or darker than their background.

    For up to ``n`` random images: the mean inside radius ``0.4 L / 2`` minus the mean outside
    ``0.8 L / 2``, in units of the outside standard deviation. Returns ``(mean, t)``: the mean
    of that statistic over the images and its t-value (mean / standard error). Positive means
    protein-bright. Weak for filaments or particles that do not fill the centre.
    """
    box = stack.require_box()
    count = len(stack)
    pick = np.sort(np.random.default_rng(seed).choice(count, min(n, count), replace=False))
    images = stack.images.read(pick).astype(np.float64)
    inner = circular_mask(box, 0.4)
    outer = ~circular_mask(box, 0.8)
    bg_std = images[:, outer].std(axis=1)
    bg_std[bg_std == 0] = 1.0
    stat = (images[:, inner].mean(axis=1) - images[:, outer].mean(axis=1)) / bg_std
    if len(stat) < 2:
        return float(stat.mean()), 0.0
    sem = stat.std(ddof=1) / np.sqrt(len(stat))
    return float(stat.mean()), float(stat.mean() / sem) if sem > 0 else 0.0


def contrast_mismatch(stack: ParticleStack, invert: bool, t_threshold: float = 5.0) -> str | None:
    """Return a warning when ``invert`` contradicts the measured contrast, else ``None``.

    After the flag, images must be protein-dark for the forward model; a measured contrast with
    ``|t| > t_threshold`` (at least 5 images) of the other sign is an obvious mismatch.
    """
    if len(stack) < 5:
        return None
    mean, t = measure_contrast(stack)
    if abs(t) <= t_threshold:
        return None
    bright = mean > 0
    if bright != invert:
        state = "bright" if bright else "dark"
        return (
            f"{stack.path}: particles look protein-{state} (centre vs background "
            f"{mean:+.3f} sd, t = {t:+.1f}) but contrast inversion is {'on' if invert else 'off'}; "
            f"the forward model expects protein-dark images: use invert={not invert}"
        )
    return None


@dataclass(frozen=True)
class PreprocessOptions:
    """What :func:`preprocess` does (see the module docstring for each step)."""

    box: int | None = None
    invert: bool = False
    normalize: bool = True
    background_radius: float = 0.85
    window: bool = True
    window_inner: float = 0.85
    window_outer: float = 0.99


def _radius_px(box: int) -> np.ndarray:
    """Float64 ``(L, L)`` distance in pixels of each pixel from the centre ``(L//2, L//2)``."""
    c = box // 2
    y, x = np.mgrid[:box, :box]
    return np.hypot(x - c, y - c)


def circular_mask(box: int, radius: float) -> np.ndarray:
    """Boolean ``(L, L)`` mask, true inside radius ``radius * L / 2`` around ``(L//2, L//2)``."""
    return _radius_px(box) < radius * box / 2


def soft_window(box: int, inner: float, outer: float) -> np.ndarray:
    """Float32 ``(L, L)`` raised-cosine circular window: 1 inside ``inner``, 0 beyond ``outer``.

    Radii are fractions of ``L / 2`` measured from the centre ``(L//2, L//2)``.
    """
    if not 0 < inner < outer:
        raise ConfigError(f"window radii: expected 0 < inner < outer, got {inner}, {outer}")
    r = _radius_px(box) / (box / 2)
    t = np.clip((r - inner) / (outer - inner), 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


def normalize_background(images: np.ndarray, radius: float) -> np.ndarray:
    """Per image: subtract the background mean, divide by its std (pixels outside ``radius``)."""
    outside = ~circular_mask(images.shape[-1], radius)
    bg = images[:, outside]
    mean = bg.mean(axis=1, dtype=np.float64)
    std = bg.std(axis=1, dtype=np.float64)
    std[std == 0] = 1.0
    return ((images - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


class PreprocessedReader:
    """An :class:`~cryospin.core.particles.ImageReader` applying :class:`PreprocessOptions`."""

    def __init__(self, base: ImageReader, in_box: int, options: PreprocessOptions):
        self.base = base
        self.in_box = int(in_box)
        self.options = options
        self.box = int(options.box or in_box)
        self._window = (
            soft_window(self.in_box, options.window_inner, options.window_outer)
            if options.window
            else None
        )

    def __len__(self) -> int:
        return len(self.base)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Read processed float32 images ``(n, box, box)`` of particles ``indices``."""
        images = self.base.read(indices)
        o = self.options
        if o.normalize:
            images = normalize_background(images, o.background_radius)
        if self._window is not None:
            images = images * self._window
        if self.box != self.in_box:
            small = fourier_downsample(torch.from_numpy(np.ascontiguousarray(images)), self.box)
            images = small.numpy()
        if o.invert:
            images = -images
        return np.ascontiguousarray(images, dtype=np.float32)


def preprocess(stack: ParticleStack, options: PreprocessOptions) -> ParticleStack:
    """Return ``stack`` with its images processed lazily by ``options``.

    The box and pixel size follow the downsampling; CTFs, poses and shifts (in Å) are unchanged.

    Raises:
        InputError: the stack's box is unknown (opened without images), or the target box is
            odd, not positive, or larger than the stack's box.
    """
    in_box = stack.require_box()
    box = options.box
    if box is not None:
        if box <= 0 or box % 2:
            raise InputError(f"--box {box}: expected a positive even box size")
        if box > in_box:
            raise InputError(
                f"--box {box}: larger than the stack's {in_box} px images ({stack.path}); "
                "expected a box no larger than the images"
            )
    reader = PreprocessedReader(stack.images, in_box, options)
    scale = in_box / reader.box
    return dataclasses.replace(
        stack,
        images=reader,
        box=reader.box,
        pixel_size_A=stack.pixel_size_A * scale,
        extra={
            "original_box": stack.box,
            "original_pixel_size_A": stack.pixel_size_A,
            **stack.extra,
            "preprocess": options,
        },
    )


def half_sets(stack: ParticleStack, seed: int = 0, use_file: bool = True) -> np.ndarray:
    """Half-set labels ``(N,)`` in {1, 2}.

    The file's own (``rlnRandomSubset``, cryoSPARC ``alignments3D/split``) when present and
    ``use_file``; otherwise a seeded random split into halves of sizes ``ceil(N/2)`` and
    ``floor(N/2)``.

    Raises:
        InputError: the file's labels are not all 1 or 2.
    """
    if use_file and stack.half_set is not None:
        labels = np.asarray(stack.half_set, dtype=np.int64)
        bad = ~np.isin(labels, (1, 2))
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError(
                f"{stack.path}: row {row + 1}: half-set label {labels[row]}; expected 1 or 2"
            )
        return labels
    n = len(stack)
    order = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=np.int64)
    labels[order[: (n + 1) // 2]] = 1
    labels[order[(n + 1) // 2 :]] = 2
    return labels
