"""Range checks of the physical parameters read from particle files.

Every value a reader takes from a STAR or ``.cs`` file is checked here before it reaches the
engine: a value that is missing, not a number, not finite or outside a physically plausible
range ends in one :class:`~cryospin.core.errors.InputError` line naming the file, the table,
the row and the field, and saying what was expected. The ranges (:data:`STAR_RANGES`,
:data:`CS_RANGES`) are generous: they reject what no microscope produces (a negative defocus,
an amplitude contrast of 7, a 3e38 Å pixel), not unusual but real data.

Units follow each format: RELION's defocus in Å, voltage in kV, Cs in mm, angles in degrees;
cryoSPARC's angles in radians.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryospin.core.errors import InputError
from cryospin.core.particles import CTFParams


@dataclass(frozen=True)
class Range:
    """Allowed interval of one field: ``low <= x <= high`` (``<`` where ``*_open``)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    unit: str = ""

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask ``(N,)``: finite and inside the interval (NaN is outside)."""
        with np.errstate(invalid="ignore"):
            above = values > self.low if self.low_open else values >= self.low
            below = values < self.high if self.high_open else values <= self.high
        return np.isfinite(values) & above & below

    def describe(self) -> str:
        """Return the interval as text, e.g. ``0 <= value < 1``."""
        lo = "<" if self.low_open else "<="
        hi = "<" if self.high_open else "<="
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.low:g} {lo} value {hi} {self.high:g}{unit}"


_DEFOCUS = Range(0, 2e5, low_open=True, unit="Å (underfocus positive, at most 20 µm)")
_VOLTAGE = Range(0, 3000, low_open=True, unit="kV")
_CS = Range(0, 20, unit="mm")
_AMPLITUDE = Range(0, 1, high_open=True)
#: Accepted pixel sizes (metadata or stack header).
PIXEL_SIZE = Range(0, 100, low_open=True, unit="Å")
_PIXEL = PIXEL_SIZE
_ANGLE_DEG = Range(-720, 720, unit="degrees")
_ANGLE_RAD = Range(-4 * np.pi, 4 * np.pi, unit="radians")
_BFACTOR = Range(-1e4, 1e4, unit="Å^2")
_ORIGIN_A = Range(-1e4, 1e4, unit="Å")
_ORIGIN_PX = Range(-1e4, 1e4, unit="pixels")
_EULER = Range(-1e3, 1e3, unit="degrees")

#: Checked RELION columns (particle and optics blocks) and their ranges; defocus and amplitude
#: contrast are checked per particle by :func:`check_ctf`.
STAR_RANGES: dict[str, Range] = {
    "rlnDefocusAngle": _ANGLE_DEG,
    "rlnVoltage": _VOLTAGE,
    "rlnSphericalAberration": _CS,
    "rlnPhaseShift": _ANGLE_DEG,
    "rlnCtfBfactor": _BFACTOR,
    "rlnImagePixelSize": _PIXEL,
    "rlnDetectorPixelSize": Range(0, 1e3, low_open=True, unit="µm"),
    "rlnMagnification": Range(0, 1e8, low_open=True),
    "rlnImageSize": Range(2, 1e5, unit="pixels"),
    "rlnAngleRot": _EULER,
    "rlnAngleTilt": _EULER,
    "rlnAnglePsi": _EULER,
    "rlnOriginXAngst": _ORIGIN_A,
    "rlnOriginYAngst": _ORIGIN_A,
    "rlnOriginX": _ORIGIN_PX,
    "rlnOriginY": _ORIGIN_PX,
}

#: Checked cryoSPARC fields and their ranges (vector fields: every component); defocus and
#: amplitude contrast: :func:`check_ctf`.
CS_RANGES: dict[str, Range] = {
    "ctf/df_angle_rad": _ANGLE_RAD,
    "ctf/accel_kv": _VOLTAGE,
    "ctf/cs_mm": _CS,
    "ctf/phase_shift_rad": _ANGLE_RAD,
    "ctf/bfactor": _BFACTOR,
    "blob/psize_A": _PIXEL,
    "alignments3D/psize_A": _PIXEL,
    "alignments_class_0/psize_A": _PIXEL,
    "alignments3D/pose": Range(-4 * np.pi, 4 * np.pi, unit="radians"),
    "alignments_class_0/pose": Range(-4 * np.pi, 4 * np.pi, unit="radians"),
    "alignments3D/shift": _ORIGIN_PX,
    "alignments_class_0/shift": _ORIGIN_PX,
}


def _as_float(path: Path, where: str, name: str, values: object) -> np.ndarray:
    """Float64 ``(N, k)`` copy of a column; raises :class:`InputError` on text."""
    try:
        if isinstance(values, pd.Series):
            values = pd.to_numeric(values)
        array = np.array(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: {where}column {name} holds non-numeric values ({exc})") from exc
    return array.reshape(len(array), -1)


def check_ranges(
    path: Path,
    columns: Mapping[str, object] | np.ndarray,
    ranges: Mapping[str, Range],
    where: str = "",
) -> None:
    """Check every column of ``columns`` that ``ranges`` names against its range.

    Args:
        path: the file, for the message.
        columns: a DataFrame, a structured array or a dict of ``(N,)`` / ``(N, k)`` columns.
        ranges: allowed interval per column name (other columns are not checked).
        where: table name for the message, e.g. ``"data_optics "`` (with a trailing space).

    Raises:
        InputError: ``"<file>: <where>row <r>: <field> is <value>; expected <range>"`` for
            the first row (1-based) holding a non-numeric, non-finite or out-of-range value.
    """
    names = columns.dtype.names if isinstance(columns, np.ndarray) else list(columns.keys())
    for name in names or ():
        if name not in ranges:
            continue
        values = _as_float(path, where, name, columns[name])
        ok = ranges[name].contains(values).all(axis=1)
        if not ok.all():
            row = int(np.nonzero(~ok)[0][0])
            shown = values[row, 0] if values.shape[1] == 1 else values[row].tolist()
            raise InputError(
                f"{path}: {where}row {row + 1}: {name} is {shown}; "
                f"expected {ranges[name].describe()}"
            )


def check_not_empty(
    path: Path, n: int, table: str, expected: str = "at least one particle"
) -> None:
    """Raise :class:`InputError` when ``table`` of ``path`` has no rows.

    Raises:
        InputError: ``"<file>: <table> has no rows; expected <expected>"``.
    """
    if n == 0:
        raise InputError(f"{path}: {table} has no rows; expected {expected}")


def check_ctf(
    path: Path, ctf: CTFParams, fields: Mapping[str, str], groups: np.ndarray | None = None
) -> None:
    """Check each particle's defocus U, V (Å) and amplitude contrast ``w`` after the optics join.

    ``fields`` maps ``defocus_u_A``, ``defocus_v_A`` and ``amplitude_contrast`` to the file's
    field names (for the message); ``groups`` ``(N,)`` are the optics groups. Defocus must be
    in ``(0, 2e5]`` Å and ``w`` in ``[0, 1)``, except for the explicit "no CTF" row that
    ``cryospin simulate --ctf none`` writes: ``w = 1`` with zero defocus U, V and ``Cs``
    (a CTF of exactly -1).

    Raises:
        InputError: ``"<file>: row <r> (optics group <g>): <field> is <value>; expected ..."``.
    """
    no_ctf = (
        (ctf.amplitude_contrast == 1)
        & (ctf.defocus_u_A == 0)
        & (ctf.defocus_v_A == 0)
        & (ctf.cs_mm == 0)
    )
    for attr, allowed in (
        ("defocus_u_A", _DEFOCUS),
        ("defocus_v_A", _DEFOCUS),
        ("amplitude_contrast", _AMPLITUDE),
    ):
        values = np.asarray(getattr(ctf, attr), dtype=np.float64)
        bad = ~allowed.contains(values) & ~no_ctf
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            group = f" (optics group {groups[row]})" if groups is not None else ""
            raise InputError(
                f"{path}: row {row + 1}{group}: {fields[attr]} is {values[row]:g}; "
                f"expected {allowed.describe()}"
            )


def check_labels(path: Path, values: np.ndarray, field: str, allowed: tuple[int, ...]) -> None:
    """Raise :class:`InputError` naming the first row whose ``field`` is not in ``allowed``.

    Used for half-set labels (RELION ``rlnRandomSubset`` 1/2, cryoSPARC ``split`` 0/1).
    """
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isin(values, allowed)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise InputError(
            f"{path}: row {row + 1}: {field} is {values[row]:g}; expected one of "
            f"{', '.join(map(str, allowed))}"
        )
