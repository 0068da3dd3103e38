"""The particles of a run: the file (``--stack``), ``--apix``, ``--ind``, the contrast check.

:func:`open_run_stack` is the first step of every run. After opening the particle file it

* replaces the pixel size by ``cfg.apix`` when given (``extra["pixel_size_override"]`` tells the
  writers to state it in the files they write);
* keeps only the particles of ``cfg.ind`` (:func:`load_indices`), in that order: every output
  (map, ``poses.*``) covers that subset, as cryoDRGN's ``--ind`` does;
* measures the contrast (:func:`check_contrast`) and stops with one line naming the flag to pass
  when the images obviously disagree with the inversion that would be applied by default
  (docs/CONVENTIONS.md item 13). A choice made by the user (``invert_contrast`` set by
  ``--invert``/``--no-invert``, ``--set`` or the YAML file) is applied as given, with a warning.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.engine import io_bridge
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import default_invert, open_stack
from cryospin.core.engine.run_log import event
from cryospin.core.errors import InputError
from cryospin.core.particles import ParticleStack

#: A measured contrast counts as obvious when ``|t| > CONTRAST_T`` (as ``cryospin info`` warns).
CONTRAST_T = 5.0
#: The contrast is measured only with at least this many particles.
CONTRAST_MIN_PARTICLES = 5
#: How the contrast message names a stack's format (``extra["format"]`` of the I/O plugin).
FORMAT_NAMES = {
    "relion-star": "RELION STAR",
    "cryosparc-cs": "cryoSPARC .cs (by blob/sign)",
    "mrc-stack": "bare MRC",
}


def load_indices(path: str | Path, n: int) -> np.ndarray:
    """Read 0-based particle indices ``(k,)`` int64 for ``--ind``.

    Accepts a cryoDRGN index file (``.pkl``: a pickled integer array, as ``cryodrgn filter``
    writes; read with :func:`cryospin.core.safe_pickle.safe_load`, which runs no code from the
    file) or a text file of integers separated by spaces, commas or newlines (``#`` starts a
    comment).

    Raises:
        InputError: the file is missing or unreadable, holds no index, a non-integer, an index
            outside ``[0, n)`` or the same index twice (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--ind {path}: file not found")
    if path.suffix.lower() == ".pkl":
        from cryospin.core.safe_pickle import safe_load

        values = np.asarray(safe_load(path))
    else:
        lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
        words = " ".join(lines).replace(",", " ").split()
        try:
            values = np.array([int(w) for w in words], dtype=np.int64)
        except ValueError as exc:
            raise InputError(f"--ind {path}: not a list of integers ({exc})") from None
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        raise InputError(
            f"--ind {path}: expected a non-empty 1-D array of integer indices, got "
            f"{values.dtype} {values.shape}"
        )
    idx = values.astype(np.int64)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        raise InputError(
            f"--ind {path}: index {idx[bad][0]} is outside 0..{n - 1} (0-based, {n} particles)"
        )
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"--ind {path}: index {uniq[counts > 1][0]} appears twice")
    return idx


def check_contrast(stack: ParticleStack, chosen: bool | None) -> tuple[bool, dict[str, Any]]:
    """Measure the contrast of ``stack`` and decide the inversion: ``(invert, summary fields)``.

    ``chosen`` is the user's ``invert_contrast`` (``None``: not chosen, the format's default of
    :func:`cryospin.core.engine.data.default_invert` applies). The engine's forward model expects
    protein-dark images after the inversion, so a stack measured protein-bright needs inversion
    and a protein-dark one does not (``measure_contrast`` of the I/O plugin: centre minus
    background in background standard deviations, and its t-value over up to 64 images; NaN
    without a plugin that measures it or with fewer than 5 particles: nothing is checked).

    Returns the inversion and ``contrast_measured_sd``, ``contrast_t``, ``invert_contrast``,
    ``invert_contrast_source`` (``"user"`` or ``"default"``) for ``summary.json``.

    Raises:
        InputError: not chosen, and the measured contrast obviously (``|t| > 5``) contradicts
            the default; the one-line message names the flag to pass.
    """
    default = default_invert(stack)
    invert = default if chosen is None else bool(chosen)
    mean = t = float("nan")
    if len(stack) >= CONTRAST_MIN_PARTICLES and io_bridge.provides("measure_contrast"):
        mean, t = io_bridge.measure_contrast(stack)
    info = {
        "contrast_measured_sd": mean,
        "contrast_t": t,
        "invert_contrast": invert,
        "invert_contrast_source": "default" if chosen is None else "user",
    }
    if not abs(t) > CONTRAST_T or (mean > 0) == invert:
        return invert, info
    looks = "bright" if mean > 0 else "dark"
    measured = (
        f"the particles look protein-{looks} (centre vs background {mean:+.2f} sd, t = {t:+.1f})"
    )
    if chosen is None:
        fmt = FORMAT_NAMES.get(str(stack.extra.get("format")), f"{Path(stack.path).suffix} file")
        raise InputError(
            f"{stack.path}: {measured} but {fmt} stacks are "
            f"{'inverted' if default else 'not inverted'} by default; pass "
            f"{'--no-invert' if default else '--invert'} (or "
            f"{'--invert' if default else '--no-invert'} to keep the default)"
        )
    warnings.warn(
        f"{stack.path}: {measured} but contrast inversion is {'on' if invert else 'off'} as "
        "chosen; the forward model expects protein-dark images after inversion",
        stacklevel=2,
    )
    return invert, info


def open_run_stack(cfg: RunConfig) -> tuple[ParticleStack, dict[str, Any]]:
    """Open the run's particles (see the module docstring): ``(stack, summary fields)``.

    The returned stack's ``extra["invert_contrast"]`` holds the inversion the run applies (the
    ``.cs`` writer records it as ``blob/sign``).

    Raises:
        InputError: no particle file, a bad ``--ind`` file, or a contrast mismatch.
    """
    if not cfg.particles:
        raise InputError("no particle file given (--particles)")
    options = {"stack": cfg.stack} if cfg.stack else {}
    stack = open_stack(cfg.particles, cfg.datadir, **options)
    info: dict[str, Any] = {"n_particles_in_file": len(stack)}
    if cfg.apix is not None:
        info["pixel_size_in_file_A"] = stack.pixel_size_A
        extra = {**stack.extra, "pixel_size_override": True}
        stack = dataclasses.replace(stack, pixel_size_A=float(cfg.apix), extra=extra)
    if cfg.ind:
        stack = stack.subset(load_indices(cfg.ind, len(stack)))
    invert, contrast = check_contrast(stack, cfg.invert_contrast)
    stack.extra["invert_contrast"] = invert
    chosen = f" of {info['n_particles_in_file']} (--ind {cfg.ind})" if cfg.ind else ""
    event(
        f"particles: {cfg.particles}: {len(stack)}{chosen}, box {stack.box}, "
        f"{stack.pixel_size_A:.4g} Å/px{' (--apix)' if cfg.apix is not None else ''}"
    )
    mean, t = contrast["contrast_measured_sd"], contrast["contrast_t"]
    measured = (
        f"centre vs background {mean:+.2f} sd (t = {t:+.1f}; > 0 protein-bright)"
        if mean == mean
        else "not measured"
    )
    event(
        f"contrast: {measured}; inversion {'on' if invert else 'off'} "
        f"({contrast['invert_contrast_source']})"
    )
    return stack, {**info, **contrast}
