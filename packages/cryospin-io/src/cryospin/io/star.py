"""RELION STAR particle files, versions 3.0 (no optics block) and 3.1, 4, 5 (optics block).

Reading (:func:`read_star`): every optics group is read and joined per particle on
``rlnOpticsGroup``; a value in the particle block overrides its optics group's. Pixel size comes
from ``rlnImagePixelSize``, else ``rlnDetectorPixelSize`` (µm) * 1e4 / ``rlnMagnification``
(RELION 3.0), else the stack header; optics groups with different pixel sizes are
Fourier-rescaled to the smallest (:mod:`cryospin.io.rescale`), different box sizes refused.
Every value is range-checked (:mod:`cryospin.io.checks`). Poses from
``rlnAngleRot/Tilt/Psi`` (degrees, RELION's matrix ``A`` via
:func:`cryospin.core.so3.relion_euler_to_rotation`) and ``rlnOriginXAngst/YAngst`` (Å) or
``rlnOriginX/Y`` (pixels, 3.0). ``rlnRandomSubset`` becomes the half-set labels. Every
column, known or not, is kept in ``stack.metadata`` for writing back.

Writing (:func:`write_star`, re-exported from :mod:`cryospin.io.star_write`): RELION 3.1 with an
optics block, every original column kept, ``rlnAngleRot/Tilt/Psi`` and ``rlnOriginXAngst/YAngst``
replaced by the given poses.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryospin.core.errors import InputError
from cryospin.core.particles import CTFParams, ImageReader, ParticleStack
from cryospin.io.checks import (
    STAR_RANGES,
    check_ctf,
    check_labels,
    check_not_empty,
    check_ranges,
)
from cryospin.io.common import (
    NoImages,
    check_one_box,
    choose_pixel_size,
    mixed_pixel_sizes,
    open_referenced_stacks,
    rescale_to_working,
)
from cryospin.io.paths import split_image_names
from cryospin.io.poses import euler_to_rotations
from cryospin.io.star_write import new_particle_stack, stack_image_names, write_star

#: Columns that may live in the optics block (3.1+) or in the particle block (3.0).
OPTICS_FIELDS = (
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnMagnification",
    "rlnDetectorPixelSize",
)
_CTF_REQUIRED = ("rlnDefocusU", "rlnVoltage", "rlnSphericalAberration")
_CTF_FIELDS = {
    "defocus_u_A": "rlnDefocusU",
    "defocus_v_A": "rlnDefocusV",
    "amplitude_contrast": "rlnAmplitudeContrast",
}
#: Used, with a warning, when a file has no rlnAmplitudeContrast (typical cryo-EM value).
DEFAULT_AMPLITUDE_CONTRAST = 0.1


def _as_frame(block: object) -> pd.DataFrame:
    """Return a STAR block as a DataFrame (a key-value block becomes one row)."""
    if isinstance(block, pd.DataFrame):
        return block
    if isinstance(block, dict):
        return pd.DataFrame({k: [v] for k, v in block.items()})
    raise TypeError(type(block))


def _empty_loop(path: Path) -> str | None:
    """Name of the first ``data_`` block whose ``loop_`` has a header but no rows, or None."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    block, state, rows = "data_", "", 0
    for line in [*lines, "data_"]:
        if line.startswith("data_"):
            if state and rows == 0:
                return block
            block, state, rows = line, "", 0
        elif line.startswith("loop_"):
            state = "header"
        elif state and line.startswith("_"):
            state = "header"
        elif state and line and not line.startswith("#"):
            state, rows = "rows", rows + 1
    return None


def read_star_tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read the particle table and the optics table (or ``None``) of a STAR file.

    The particle table is the ``particles`` block, else the first block with ``rlnImageName`` or
    ``rlnDefocusU`` (3.0 files name it ``data_``, ``data_images``, ``data_model_class_1``...).
    Both tables' values are range-checked (:data:`cryospin.io.checks.STAR_RANGES`).

    Raises:
        InputError: the file cannot be parsed, holds no particle table, a table has a header
            but no rows, or a value is not a number or out of range (names table, row, field).
    """
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a malformed file
        empty = _empty_loop(path)
        if empty is not None:  # starfile fails on some loops without rows
            raise InputError(f"{path}: {empty} has no rows; expected at least one") from exc
        raise InputError(f"{path}: not a readable STAR file ({exc})") from exc
    optics = _as_frame(blocks["optics"]) if "optics" in blocks else None
    particles = None
    if "particles" in blocks:
        particles = _as_frame(blocks["particles"])
    else:
        for name, block in blocks.items():
            if name == "optics":
                continue
            frame = _as_frame(block)
            if {"rlnImageName", "rlnDefocusU"} & set(frame.columns):
                particles = frame
                break
    if particles is None:
        raise InputError(
            f"{path}: no particle table; expected a data_particles block or a loop with "
            "rlnImageName and rlnDefocusU"
        )
    particles = particles.reset_index(drop=True)
    table = "data_particles" if optics is not None else "the particle table"
    check_not_empty(path, len(particles), table)
    if optics is not None:
        check_not_empty(path, len(optics), "data_optics", "one row per optics group")
        check_ranges(path, optics, STAR_RANGES, "data_optics ")
    check_ranges(path, particles, STAR_RANGES, "data_particles " if optics is not None else "")
    return particles, optics


def _group_numbers(path: Path, frame: pd.DataFrame, where: str) -> np.ndarray:
    """``rlnOpticsGroup`` of a table as int64; raises :class:`InputError` unless integers."""
    values = pd.to_numeric(frame["rlnOpticsGroup"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise InputError(
            f"{path}: {where}row {row + 1}: rlnOpticsGroup is "
            f"{frame['rlnOpticsGroup'].iloc[row]}; expected an integer group number"
        )
    return values.astype(np.int64)


def join_optics(path: Path, particles: pd.DataFrame, optics: pd.DataFrame | None) -> pd.DataFrame:
    """Per-particle optics values: the optics-group row of each particle, particle values first.

    Returns a DataFrame with one row per particle and the columns of :data:`OPTICS_FIELDS` that
    either table has, plus ``rlnOpticsGroup``.

    Raises:
        InputError: two optics groups share a number, a particle names an unknown group, or the
            particle block lacks rlnOpticsGroup while there are several groups.
    """
    n = len(particles)
    out = pd.DataFrame(index=particles.index)
    if optics is None:
        out["rlnOpticsGroup"] = (
            _group_numbers(path, particles, "")
            if "rlnOpticsGroup" in particles
            else np.ones(n, dtype=np.int64)
        )
    else:
        if "rlnOpticsGroup" not in optics:
            raise InputError(f"{path}: data_optics lacks the required column rlnOpticsGroup")
        groups = _group_numbers(path, optics, "data_optics ")
        values, counts = np.unique(groups, return_counts=True)
        if (counts > 1).any():
            raise InputError(
                f"{path}: data_optics: optics group {values[counts > 1][0]} appears "
                f"{counts[counts > 1][0]} times; expected each rlnOpticsGroup number once"
            )
        if "rlnOpticsGroup" in particles:
            member = _group_numbers(path, particles, "data_particles ")
        elif len(groups) == 1:
            member = np.full(n, groups[0], dtype=np.int64)
        else:
            raise InputError(
                f"{path}: data_particles lacks rlnOpticsGroup; expected it with "
                f"{len(groups)} optics groups"
            )
        unknown = ~np.isin(member, groups)
        if unknown.any():
            row = int(np.nonzero(unknown)[0][0])
            raise InputError(
                f"{path}: row {row + 1}: rlnOpticsGroup {member[row]} is not in data_optics "
                f"(groups {', '.join(map(str, values))})"
            )
        out["rlnOpticsGroup"] = member
        pos = np.searchsorted(values, member)
        order = np.argsort(groups)
        for col in OPTICS_FIELDS:
            if col in optics:
                out[col] = optics[col].to_numpy()[order][pos]
    for col in OPTICS_FIELDS:
        if col in particles:
            out[col] = particles[col].to_numpy()
    return out


def _numeric(path: Path, frame: pd.DataFrame, col: str) -> np.ndarray:
    try:
        values = np.array(pd.to_numeric(frame[col]), dtype=np.float64)  # writable copy
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: column {col} holds non-numeric values ({exc})") from exc
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise InputError(
            f"{path}: row {row + 1}: {col} is {frame[col].iloc[row]}; expected a number"
        )
    return values


def _pixel_sizes(path: Path, merged: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    if "rlnImagePixelSize" in merged:
        return _numeric(path, merged, "rlnImagePixelSize"), "rlnImagePixelSize"
    if "rlnDetectorPixelSize" in merged and "rlnMagnification" in merged:
        det = _numeric(path, merged, "rlnDetectorPixelSize")
        mag = _numeric(path, merged, "rlnMagnification")
        with np.errstate(divide="ignore", invalid="ignore"):
            return det * 1e4 / mag, "rlnDetectorPixelSize * 1e4 / rlnMagnification"
    return None, "rlnImagePixelSize"


def _ctf(path: Path, particles: pd.DataFrame, col: Callable[..., np.ndarray]) -> CTFParams:
    """CTF parameters from the columns (``col(name, default)``: merged with the optics block)."""
    dfu = col("rlnDefocusU")
    ctf = CTFParams(
        defocus_u_A=dfu,
        defocus_v_A=col("rlnDefocusV") if "rlnDefocusV" in particles else dfu.copy(),
        defocus_angle_deg=col("rlnDefocusAngle", 0.0),
        voltage_kV=col("rlnVoltage"),
        cs_mm=col("rlnSphericalAberration"),
        amplitude_contrast=col("rlnAmplitudeContrast", DEFAULT_AMPLITUDE_CONTRAST),
        phase_shift_deg=col("rlnPhaseShift", 0.0),
        bfactor_A2=col("rlnCtfBfactor") if "rlnCtfBfactor" in particles else None,
    )
    return ctf


def _open_images(
    path: Path,
    particles: pd.DataFrame,
    merged: pd.DataFrame,
    datadir: str | Path | None,
    stack: str | Path | None,
) -> tuple[ImageReader, int, list]:
    """Open the stacks ``rlnImageName`` refers to; return the reader, box and stack headers."""
    img_idx, img_paths = split_image_names(particles["rlnImageName"].to_numpy(), path)
    reader, headers = open_referenced_stacks(
        path,
        img_paths,
        img_idx,
        Path(datadir) if datadir else None,
        Path(stack) if stack else None,
        "rlnImageName",
    )
    box = reader.box
    if "rlnImageSize" in merged:
        sizes = _numeric(path, merged, "rlnImageSize")
        if (sizes != box).any():
            row = int(np.nonzero(sizes != box)[0][0])
            raise InputError(
                f"{path}: row {row + 1}: rlnImageSize {sizes[row]:g} disagrees with the "
                f"stack's {box} px images"
            )
    return reader, box, headers


def _poses(
    columns: set[str], col: Callable[..., np.ndarray], ps: np.ndarray | float, n: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Rotations (RELION ``A``) and origins in Å (pixel origins of 3.0 times ``ps``), or None."""
    rotations = None
    shifts = None
    if {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= columns:
        rotations = euler_to_rotations(col("rlnAngleRot"), col("rlnAngleTilt"), col("rlnAnglePsi"))
        shifts = np.zeros((n, 2))
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= columns:
        shifts = np.stack([col("rlnOriginXAngst"), col("rlnOriginYAngst")], axis=1)
    elif {"rlnOriginX", "rlnOriginY"} <= columns:
        shifts = np.stack([col("rlnOriginX"), col("rlnOriginY")], axis=1) * np.reshape(ps, (-1, 1))
    return rotations, shifts


def _geometry(
    path: Path, source: tuple | None, merged: pd.DataFrame, groups: np.ndarray
) -> tuple[ImageReader, int | None, float, np.ndarray | None]:
    """Image reader, box, working pixel size (Å) and per-particle pixel sizes (None: header's).

    ``source`` is ``(particles, merged, datadir, stack)`` for :func:`_open_images`, or ``None``
    for metadata only (box from ``rlnImageSize``, pixel size NaN when the file gives none).
    Particles at several pixel sizes are read rescaled to the smallest (:mod:`cryospin.io.rescale`).
    """
    per_particle, field = _pixel_sizes(path, merged)
    if source is None:
        reader: ImageReader = NoImages(len(merged), path)
        box = int(_numeric(path, merged, "rlnImageSize")[0]) if "rlnImageSize" in merged else None
        if per_particle is None:
            return reader, box, float("nan"), None
        return reader, box, choose_pixel_size(path, per_particle, [], field, groups), per_particle
    reader, box, headers = _open_images(path, *source)
    pixel_size = choose_pixel_size(path, per_particle, headers, field, groups)
    return rescale_to_working(reader, box, per_particle, pixel_size), box, pixel_size, per_particle


def read_star(
    path: str | Path,
    datadir: str | Path | None = None,
    stack: str | Path | None = None,
    images: bool = True,
) -> ParticleStack:
    """Open a RELION STAR particle file as a lazy :class:`ParticleStack`.

    Args:
        path: the ``.star`` file.
        datadir: where to look for stacks not found beside the STAR file.
        stack: the stack file to use when the STAR names a single stack under another name.
        images: ``False`` opens the metadata only (no stack needed; ``read`` then raises).

    Raises:
        InputError: malformed file, missing columns, bad optics groups, missing stacks, bad
            pixel sizes, out-of-range indices (the message names the file, row or field).
    """
    path = Path(path)
    particles, optics = read_star_tables(path)
    n = len(particles)
    merged = join_optics(path, particles, optics)
    required = list(_CTF_REQUIRED) + (["rlnImageName"] if images else [])
    missing = [c for c in required if c not in particles and c not in merged]
    if missing:
        where = "data_particles or data_optics" if optics is not None else "the particle table"
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)} in {where}")

    if "rlnAmplitudeContrast" not in merged and "rlnAmplitudeContrast" not in particles:
        warnings.warn(
            f"{path}: no rlnAmplitudeContrast; using {DEFAULT_AMPLITUDE_CONTRAST}", stacklevel=2
        )

    def col(name: str, default: float | None = None) -> np.ndarray:
        frame = merged if name in merged else particles
        if name in frame:
            return _numeric(path, frame, name)
        return np.full(n, np.nan if default is None else default)

    ctf = _ctf(path, particles, col)
    groups = merged["rlnOpticsGroup"].to_numpy(dtype=np.int64)
    check_ctf(path, ctf, _CTF_FIELDS, groups)
    half_set = None
    if "rlnRandomSubset" in particles:
        check_labels(path, col("rlnRandomSubset"), "rlnRandomSubset", (1, 2))
        half_set = col("rlnRandomSubset").astype(np.int64)
    if "rlnImageSize" in merged:
        check_one_box(path, _numeric(path, merged, "rlnImageSize"), groups, "rlnImageSize")
    source = (particles, merged, datadir, stack) if images else None
    reader, box, pixel_size, per_particle_ps = _geometry(path, source, merged, groups)
    ps = per_particle_ps if per_particle_ps is not None else pixel_size
    rotations, shifts = _poses(set(particles.columns), col, ps, n)

    return ParticleStack(
        path=path,
        images=reader,
        box=box,
        pixel_size_A=pixel_size,
        ctf=ctf,
        rotations=rotations,
        shifts_A=shifts,
        optics_group=groups,
        half_set=half_set,
        metadata=particles,
        optics=optics,
        extra={
            "format": "relion-star",
            "star_version": "3.0" if optics is None else "3.1+",
            **mixed_pixel_sizes(per_particle_ps, pixel_size),
        },
    )


__all__ = [
    "DEFAULT_AMPLITUDE_CONTRAST",
    "OPTICS_FIELDS",
    "join_optics",
    "new_particle_stack",
    "read_star",
    "read_star_tables",
    "stack_image_names",
    "write_star",
]
