"""cryoSPARC ``.cs`` particle files (NumPy structured arrays).

Read: ``blob/path`` (a leading ``>`` means relative to the project folder: pass it as datadir),
``blob/idx`` (0-based), ``blob/shape`` (may be missing: then the stack header gives the box),
``blob/psize_A``; ``ctf/df1_A``, ``df2_A`` (Å), ``df_angle_rad``, ``accel_kv``, ``cs_mm``,
``amp_contrast``, ``phase_shift_rad``, ``bfactor``; poses from ``alignments3D/*`` or, for
ab-initio jobs, ``alignments_class_0/*``: ``pose`` (axis-angle, radians; RELION's
``A = exp(pose)^T``), ``shift`` (pixels at ``psize_A`` of the alignment, which may differ from
``blob/psize_A``; same sign as RELION's origin), ``split`` (0/1 half-sets, stored as 1/2).
``blob/sign`` (-1 for dark-protein stacks) is kept in ``stack.extra["blob_sign"]``.

Write (:func:`write_cs`): the original array with the pose fields replaced (or added); a stack read
from another format gets a new array (:func:`cryospin.io.cs_write.particle_array`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryospin.core.atomic import atomic_path
from cryospin.core.errors import InputError
from cryospin.core.particles import CTFParams, ImageReader, ParticleStack
from cryospin.io.checks import (
    CS_RANGES,
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
from cryospin.io.paths import strip_cryosparc_prefix
from cryospin.io.poses import cryosparc_to_rotations, rotations_to_cryosparc

ALIGNMENT_PREFIXES = ("alignments3D", "alignments_class_0")
_REQUIRED = ("ctf/df1_A", "ctf/df2_A", "ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast")
_CTF_FIELDS = {
    "defocus_u_A": "ctf/df1_A",
    "defocus_v_A": "ctf/df2_A",
    "amplitude_contrast": "ctf/amp_contrast",
}


def load_cs(path: Path) -> np.ndarray:
    """Load the structured array of a ``.cs`` file.

    Raises:
        InputError: not a NumPy structured array (names the file).
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable cryoSPARC .cs file ({exc})") from exc
    if not isinstance(data, np.ndarray) or data.dtype.names is None or data.ndim != 1:
        raise InputError(f"{path}: expected a 1-D NumPy structured array (cryoSPARC .cs)")
    return data


def alignment_prefix(data: np.ndarray) -> str | None:
    """``alignments3D`` or ``alignments_class_0`` if the array holds poses, else ``None``."""
    names = set(data.dtype.names or ())
    for prefix in ALIGNMENT_PREFIXES:
        if f"{prefix}/pose" in names:
            return prefix
    return None


def _field(path: Path, data: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(data[name], dtype=np.float64)
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise InputError(f"{path}: row {row + 1}: {name} is {values[row]}; expected a number")
    return values


def _ctf(path: Path, data: np.ndarray, names: set[str], n: int) -> CTFParams:
    """CTF parameters from the ``ctf/*`` fields (angles in radians converted to degrees)."""

    def opt(name: str, default: float) -> np.ndarray:
        return _field(path, data, name) if name in names else np.full(n, default)

    return CTFParams(
        defocus_u_A=_field(path, data, "ctf/df1_A"),
        defocus_v_A=_field(path, data, "ctf/df2_A"),
        defocus_angle_deg=np.rad2deg(opt("ctf/df_angle_rad", 0.0)),
        voltage_kV=_field(path, data, "ctf/accel_kv"),
        cs_mm=_field(path, data, "ctf/cs_mm"),
        amplitude_contrast=_field(path, data, "ctf/amp_contrast"),
        phase_shift_deg=np.rad2deg(opt("ctf/phase_shift_rad", 0.0)),
        bfactor_A2=_field(path, data, "ctf/bfactor") if "ctf/bfactor" in names else None,
    )


def _open_images(
    path: Path,
    data: np.ndarray,
    names: set[str],
    datadir: str | Path | None,
    stack: str | Path | None,
) -> tuple[ImageReader, int, list]:
    """Open the stacks of ``blob/path`` and ``blob/idx``; return the reader, box and headers."""
    stack_names = np.array(
        [
            strip_cryosparc_prefix(p.decode() if isinstance(p, bytes) else str(p))
            for p in data["blob/path"]
        ],
        dtype=object,
    )
    reader, headers = open_referenced_stacks(
        path,
        stack_names,
        np.asarray(data["blob/idx"], dtype=np.int64),
        Path(datadir) if datadir else None,
        Path(stack) if stack else None,
        "blob/idx",
    )
    box = reader.box
    if "blob/shape" in names:
        shapes = np.asarray(data["blob/shape"]).reshape(len(data), -1)
        bad = (shapes != box).any(axis=1)
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError(
                f"{path}: row {row + 1}: blob/shape {shapes[row].tolist()} disagrees with "
                f"the stack's {box} px images"
            )
    return reader, box, headers


def _poses(
    path: Path, data: np.ndarray, names: set[str], prefix: str | None, pixel_size: float
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Rotations, origins in Å and half-sets (1, 2) of the alignment group ``prefix``, or None."""
    n = len(data)
    rotations = shifts = half_set = None
    if prefix is not None:
        rotations = cryosparc_to_rotations(_field(path, data, f"{prefix}/pose"))
        shifts = np.zeros((n, 2))
        if f"{prefix}/shift" in names:
            align_psize = (
                _field(path, data, f"{prefix}/psize_A")
                if f"{prefix}/psize_A" in names
                else np.full(n, pixel_size)
            )
            shifts = _field(path, data, f"{prefix}/shift").reshape(n, 2) * align_psize[:, None]
        if f"{prefix}/split" in names:
            check_labels(path, data[f"{prefix}/split"], f"{prefix}/split", (0, 1))
            half_set = np.asarray(data[f"{prefix}/split"], dtype=np.int64) + 1
    return rotations, shifts, half_set


def read_cs(
    path: str | Path,
    datadir: str | Path | None = None,
    stack: str | Path | None = None,
    images: bool = True,
) -> ParticleStack:
    """Open a cryoSPARC ``.cs`` file as a lazy :class:`ParticleStack`.

    Args and errors as :func:`cryospin.io.star.read_star`; values are range-checked with
    :data:`cryospin.io.checks.CS_RANGES`.
    """
    path = Path(path)
    data = load_cs(path)
    names = set(data.dtype.names or ())  # load_cs guarantees a structured array
    required = list(_REQUIRED) + (["blob/path", "blob/idx"] if images else [])
    missing = [c for c in required if c not in names]
    if missing:
        raise InputError(f"{path}: missing required field(s) {', '.join(missing)}")
    n = len(data)
    check_not_empty(path, n, "the particle array")
    check_ranges(path, data, CS_RANGES)

    ctf = _ctf(path, data, names, n)
    check_ctf(path, ctf, _CTF_FIELDS)
    psize = _field(path, data, "blob/psize_A") if "blob/psize_A" in names else None
    group = (
        np.asarray(data["ctf/exp_group_id"], dtype=np.int64)
        if "ctf/exp_group_id" in names
        else np.ones(n, dtype=np.int64)
    )
    if "blob/shape" in names:
        shapes = np.asarray(data["blob/shape"], dtype=np.float64).reshape(n, -1)
        check_one_box(path, shapes.max(axis=1), group, "blob/shape")
    if images:
        reader, box, headers = _open_images(path, data, names, datadir, stack)
        pixel_size = choose_pixel_size(path, psize, headers, "blob/psize_A", group)
        reader = rescale_to_working(reader, box, psize, pixel_size)
    else:
        reader = NoImages(n, path)
        box = None
        if "blob/shape" in names:
            box = int(np.asarray(data["blob/shape"]).reshape(n, -1)[0, 0])
        pixel_size = float("nan")
        if psize is not None:
            pixel_size = choose_pixel_size(path, psize, [], "blob/psize_A", group)
    prefix = alignment_prefix(data)
    rotations, shifts, half_set = _poses(path, data, names, prefix, pixel_size)
    sign = float(np.asarray(data["blob/sign"])[0]) if "blob/sign" in names else None
    return ParticleStack(
        path=path,
        images=reader,
        box=box,
        pixel_size_A=pixel_size,
        ctf=ctf,
        rotations=rotations,
        shifts_A=shifts,
        optics_group=group,
        half_set=half_set,
        metadata=data,
        optics=None,
        extra={
            "format": "cryosparc-cs",
            "alignment_prefix": prefix,
            "blob_sign": sign,
            **mixed_pixel_sizes(psize, pixel_size),
        },
    )


def write_cs(
    path: str | Path,
    stack: ParticleStack,
    rotations: np.ndarray | None = None,
    shifts_A: np.ndarray | None = None,
) -> None:
    """Write ``stack`` as a ``.cs`` file with the given (or its own) poses, atomically.

    The original array is kept (``blob/path`` made absolute under
    ``extra["absolute_image_paths"]``, ``blob/psize_A`` under ``--apix``:
    :func:`cryospin.io.cs_write.rewrite_cs_array`); a
    stack read from another format (STAR, MRC) gets a new array
    (:func:`cryospin.io.cs_write.particle_array`). ``<prefix>/pose`` (axis-angle),
    ``<prefix>/shift`` (pixels at ``<prefix>/psize_A``, set to the stack's pixel size) are
    replaced or added, with ``prefix`` the file's alignment group (``alignments3D`` when it had
    none).
    """
    from cryospin.io.cs_write import particle_array, rewrite_cs_array

    n = len(stack)
    if isinstance(stack.metadata, np.ndarray) and stack.metadata.dtype.names:
        data = rewrite_cs_array(stack.metadata.copy(), stack)
    else:
        data = particle_array(stack)
    rotations = stack.rotations if rotations is None else rotations
    shifts_A = stack.shifts_A if shifts_A is None else shifts_A
    if rotations is None:
        raise ValueError(f"{path}: no poses to write")
    shifts_A = np.zeros((n, 2)) if shifts_A is None else np.asarray(shifts_A, dtype=np.float64)
    prefix = alignment_prefix(data) or "alignments3D"
    pixel_size = stack.pixel_size_A
    new = {
        f"{prefix}/pose": rotations_to_cryosparc(np.asarray(rotations)).astype(np.float32),
        f"{prefix}/shift": (shifts_A / pixel_size).astype(np.float32),
        f"{prefix}/psize_A": np.full(n, pixel_size, dtype=np.float32),
    }
    fields = data.dtype.names or ()
    absent = [k for k in new if k not in fields]
    if absent:
        extra = [(k, np.float32, new[k].shape[1:]) for k in absent]
        grown = np.zeros(n, dtype=np.dtype(data.dtype.descr + extra))
        for name in fields:
            grown[name] = data[name]
        data = grown
    for key, values in new.items():
        data[key] = values
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, data)
