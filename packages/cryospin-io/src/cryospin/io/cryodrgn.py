"""cryoDRGN interop files: ``ctf.pkl`` and ``poses.pkl`` (read and write).

``ctf.pkl``: float32 ``(N, 9)`` rows ``[D, Apix, dfU (Å), dfV (Å), dfAng (deg), kV, Cs (mm), w,
phase shift (deg)]``. ``poses.pkl``: a pickled tuple ``(R (N, 3, 3), t (N, 2))`` with ``R``
RELION's matrix ``A`` (cryoDRGN's ``R_from_relion``) and ``t`` the RELION origin in pixels
divided by the box ``D`` (cryoDRGN ``parse_pose_star``: ``trans /= D``, no sign change).
Files are read with :func:`cryospin.core.safe_pickle.safe_load`: only arrays, numbers, strings,
tuples, lists and dicts; a pickle naming any other callable is refused, never run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cryospin.core.atomic import atomic_path
from cryospin.core.errors import InputError
from cryospin.core.particles import CTFParams
from cryospin.core.safe_pickle import safe_load


def _dump(path: str | Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=4)


def read_ctf_pkl(path: str | Path) -> tuple[CTFParams, int, float]:
    """Read a cryoDRGN ``ctf.pkl``: returns ``(ctf, box D, pixel size Å)``.

    Raises:
        InputError: not an ``(N, 9)`` array, or rows disagree on D or Apix.
    """
    path = Path(path)
    arr = np.asarray(safe_load(path))
    if arr.ndim != 2 or arr.shape[1] != 9:
        raise InputError(f"{path}: ctf array has shape {arr.shape}; expected (N, 9)")
    arr = arr.astype(np.float64)
    for col, name in ((0, "D"), (1, "Apix")):
        if not np.all(arr[:, col] == arr[0, col]):
            raise InputError(f"{path}: column {col} ({name}) differs between rows; expected one")
    if not arr[0, 1] > 0:
        raise InputError(f"{path}: Apix is {arr[0, 1]}; expected a positive pixel size in Å")
    ctf = CTFParams(
        defocus_u_A=arr[:, 2],
        defocus_v_A=arr[:, 3],
        defocus_angle_deg=arr[:, 4],
        voltage_kV=arr[:, 5],
        cs_mm=arr[:, 6],
        amplitude_contrast=arr[:, 7],
        phase_shift_deg=arr[:, 8],
    )
    return ctf, int(arr[0, 0]), float(arr[0, 1])


def write_ctf_pkl(path: str | Path, ctf: CTFParams, box: int, pixel_size_A: float) -> None:
    """Write ``ctf`` as a cryoDRGN ``ctf.pkl`` (float32 ``(N, 9)``), atomically."""
    n = len(ctf.defocus_u_A)
    arr = np.stack(
        [
            np.full(n, box, dtype=np.float64),
            np.full(n, pixel_size_A, dtype=np.float64),
            ctf.defocus_u_A,
            ctf.defocus_v_A,
            ctf.defocus_angle_deg,
            ctf.voltage_kV,
            ctf.cs_mm,
            ctf.amplitude_contrast,
            ctf.phase_shift_deg,
        ],
        axis=1,
    ).astype(np.float32)
    _dump(path, arr)


def read_poses_pkl(
    path: str | Path, box: int, pixel_size_A: float
) -> tuple[np.ndarray, np.ndarray]:
    """Read a cryoDRGN ``poses.pkl``: returns ``(rotations (N, 3, 3), shifts_A (N, 2))``.

    ``box`` and ``pixel_size_A`` convert the fractional translations to Å. A file holding only
    rotations gives zero shifts.

    Raises:
        InputError: not ``(R, t)`` with ``R`` ``(N, 3, 3)`` and ``t`` ``(N, 2)``.
    """
    path = Path(path)
    obj = safe_load(path)
    if isinstance(obj, tuple | list) and len(obj) == 2:
        rot, trans = (np.asarray(o, dtype=np.float64) for o in obj)
    else:
        rot, trans = np.asarray(obj, dtype=np.float64), None
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise InputError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3)")
    if trans is None:
        trans = np.zeros((len(rot), 2))
    if trans.shape != (len(rot), 2):
        raise InputError(f"{path}: translations have shape {trans.shape}; expected ({len(rot)}, 2)")
    return rot, trans * box * pixel_size_A


def write_poses_pkl(
    path: str | Path,
    rotations: np.ndarray,
    shifts_A: np.ndarray | None,
    box: int,
    pixel_size_A: float,
) -> None:
    """Write a cryoDRGN ``poses.pkl`` ``(R, t)`` with ``t = shifts_A / pixel_size_A / box``."""
    rot = np.asarray(rotations, dtype=np.float32)
    shifts = np.zeros((len(rot), 2)) if shifts_A is None else np.asarray(shifts_A, dtype=np.float64)
    _dump(path, (rot, (shifts / pixel_size_A / box).astype(np.float32)))
