"""Reading and writing maps and poses through the registered I/O components.

Core never imports an I/O plugin. It asks the registered image sources (``registry`` kind
``image_source``) for these optional methods and uses the first source that has one:

* ``read_map(path) -> (volume (D, D, D) [z, y, x], voxel_size_A)``
* ``write_map(path, volume, voxel_size_A)``
* ``write_poses(path, stack, rotations (N, 3, 3), shifts_A (N, 2))`` - a particle file in the
  source's own format (the source whose suffix matches ``path``), original columns kept;
* ``write_poses_pkl(path, rotations, shifts_A, pixel_size_A, box)`` - cryoDRGN ``poses.pkl``.

Until a plugin provides them, minimal fallbacks here write a plain MRC (mode 2, voxel size set),
a RELION 3.1 STAR (optics block + particle block with every original column), and the cryoDRGN
pickle ``(R, t)`` (``R`` = RELION ``A``, ``t`` = origin in pixels / box).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.errors import InputError


def _find(method: str, suffix: str | None = None) -> Any:
    from cryospin.core.registry import get_registry

    reg = get_registry()
    for name in reg.names("image_source"):
        obj = reg.get("image_source", name)
        if suffix is not None and suffix not in getattr(obj, "suffixes", ()):
            continue
        fn = getattr(obj, method, None)
        if callable(fn):
            return fn
    return None


def _atomic_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- maps
def read_map(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a cubic map ``(D, D, D)`` and its voxel size (Å)."""
    fn = _find("read_map")
    if fn is not None:
        vol, apix = fn(Path(path))
        return np.asarray(vol, dtype=np.float32), float(apix)
    raw = Path(path).read_bytes()
    if len(raw) < 1024:
        raise InputError(f"{path}: not an MRC file (shorter than its header)")
    nx, ny, nz, mode = np.frombuffer(raw[:16], "<i4")
    if mode != 2 or not (nx == ny == nz):
        raise InputError(
            f"{path}: expected a cubic float32 MRC map, got mode {mode} {nx}x{ny}x{nz}"
        )
    mx = np.frombuffer(raw[28:32], "<i4")[0]
    xlen = np.frombuffer(raw[40:44], "<f4")[0]
    next_ = np.frombuffer(raw[92:96], "<i4")[0]
    data = np.frombuffer(raw[1024 + next_ : 1024 + next_ + 4 * nx * ny * nz], "<f4")
    return data.reshape(nz, ny, nx).copy(), float(xlen / mx) if mx else 1.0


def write_map(path: str | Path, volume: np.ndarray, voxel_size_A: float) -> None:
    """Write a real-space map ``(D, D, D)`` ``[z, y, x]`` with its voxel size, atomically."""
    vol = np.ascontiguousarray(np.asarray(volume, dtype=np.float32))
    fn = _find("write_map")
    if fn is not None:
        fn(Path(path), vol, float(voxel_size_A))
        return
    nz, ny, nx = vol.shape
    head = np.zeros(256, dtype="<i4")
    head[0:4] = (nx, ny, nz, 2)
    head[7:10] = (nx, ny, nz)
    h = head.view("<f4")
    h[10:13] = (nx * voxel_size_A, ny * voxel_size_A, nz * voxel_size_A)
    h[13:16] = 90.0
    head[16:19] = (1, 2, 3)
    h[19], h[20], h[21] = float(vol.min()), float(vol.max()), float(vol.mean())
    head[22] = 1
    raw = bytearray(head.tobytes())
    raw[208:212] = b"MAP "
    raw[212:216] = bytes([0x44, 0x44, 0, 0])
    h54 = np.array([float(vol.std())], "<f4").tobytes()
    raw[216:220] = h54
    _atomic_bytes(Path(path), bytes(raw) + vol.tobytes())


# ----------------------------------------------------------------------------- poses
def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.10g}"
    s = str(v)
    return s if s and not any(c.isspace() for c in s) else f'"{s}"'


def _table(name: str, columns: dict[str, Any]) -> str:
    keys = list(columns)
    lines = [f"data_{name}", "", "loop_"] + [f"_{k} #{i + 1}" for i, k in enumerate(keys)]
    n = len(next(iter(columns.values()))) if keys else 0
    cols = [list(np.asarray(columns[k], dtype=object)) for k in keys]
    for i in range(n):
        lines.append(" ".join(_fmt(c[i]) for c in cols))
    return "\n".join(lines) + "\n\n"


def _frame_columns(frame: Any) -> dict[str, Any]:
    return {str(c): np.asarray(frame[c]) for c in frame.columns} if frame is not None else {}


def write_poses(path: str | Path, stack: Any, rotations: np.ndarray, shifts_A: np.ndarray) -> None:
    """Write a particle file (format by suffix) with new poses; other columns kept."""
    path = Path(path)
    fn = _find("write_poses", path.suffix)
    if fn is not None:
        fn(path, stack, rotations, shifts_A)
        return
    import torch

    from cryospin.core.so3 import rotation_to_relion_euler

    n = len(stack)
    euler = rotation_to_relion_euler(torch.as_tensor(np.asarray(rotations, np.float64))).numpy()
    parts = _frame_columns(stack.metadata)
    if "rlnImageName" not in parts:
        names = stack.extra.get("image_names") if stack.extra else None
        parts["rlnImageName"] = (
            np.asarray(names)
            if names is not None
            else np.array([f"{i + 1:06d}@particles.mrcs" for i in range(n)])
        )
        parts["rlnDefocusU"] = stack.ctf.defocus_u_A
        parts["rlnDefocusV"] = stack.ctf.defocus_v_A
        parts["rlnDefocusAngle"] = stack.ctf.defocus_angle_deg
        parts["rlnPhaseShift"] = stack.ctf.phase_shift_deg
    for k in ("rlnOriginX", "rlnOriginY"):
        parts.pop(k, None)
    parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = euler.T
    parts["rlnOriginXAngst"], parts["rlnOriginYAngst"] = np.asarray(shifts_A, np.float64).T
    optics = _frame_columns(stack.optics)
    if not optics:
        optics = {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnVoltage": [float(stack.ctf.voltage_kV[0])],
            "rlnSphericalAberration": [float(stack.ctf.cs_mm[0])],
            "rlnAmplitudeContrast": [float(stack.ctf.amplitude_contrast[0])],
            "rlnImagePixelSize": [float(stack.pixel_size_A)],
            "rlnImageSize": [int(stack.box)],
            "rlnImageDimensionality": [2],
        }
        parts["rlnOpticsGroup"] = np.ones(n, dtype=int)
    text = "# version 30001\n\n" + _table("optics", optics) + "# version 30001\n\n"
    text += _table("particles", parts)
    _atomic_bytes(path, text.encode())


def write_poses_pkl(
    path: str | Path, rotations: np.ndarray, shifts_A: np.ndarray, pixel_size_A: float, box: int
) -> None:
    """CryoDRGN ``poses.pkl``: ``(R (N, 3, 3), t (N, 2))``, ``t`` = origin px / box."""
    fn = _find("write_poses_pkl")
    if fn is not None:
        fn(Path(path), rotations, shifts_A, pixel_size_A, box)
        return
    t = np.asarray(shifts_A, np.float64) / pixel_size_A / box
    _atomic_bytes(
        Path(path),
        pickle.dumps((np.asarray(rotations, np.float32), t.astype(np.float32)), protocol=4),
    )
