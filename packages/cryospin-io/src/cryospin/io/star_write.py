"""Writing RELION STAR particle files: RELION 3.1 with an optics block (:func:`write_star`).

Every original column is kept, ``rlnAngleRot/Tilt/Psi`` and ``rlnOriginXAngst/YAngst`` are replaced
by the given poses; :func:`new_particle_stack` builds the metadata of a new stack to write.
Reading is :mod:`cryospin.io.star`. Two flags in ``stack.extra`` (set by ``cryospin run``) change
what is written: ``absolute_image_paths`` names each image by the absolute path of the stack it
was read from (:mod:`cryospin.io.image_locations`), so the file resolves from any folder;
``pixel_size_override`` (``--apix``) writes the stack's pixel size into every optics group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryospin.core.atomic import atomic_path
from cryospin.core.particles import CTFParams, ParticleStack
from cryospin.io.common import NoImages
from cryospin.io.image_locations import absolute_image_names, wants_absolute_paths
from cryospin.io.poses import rotations_to_euler


def _optics_table(stack: ParticleStack) -> tuple[pd.DataFrame, np.ndarray]:
    """Build an optics table for ``stack`` and each particle's group number.

    The original optics table is kept when there is one; otherwise (RELION 3.0 input, new
    stacks) one group per distinct (voltage, Cs, amplitude contrast, pixel size).
    """
    n = len(stack)
    box, pixel_size = stack.box, stack.pixel_size_A
    if stack.optics is not None and stack.optics_group is not None:
        optics = stack.optics.copy()
        if "rlnImagePixelSize" not in optics or stack.extra.get("pixel_size_override"):
            optics["rlnImagePixelSize"] = pixel_size
        if "rlnImageSize" not in optics and box:
            optics["rlnImageSize"] = int(box)
        if "rlnImageDimensionality" not in optics:
            optics["rlnImageDimensionality"] = 2
        return optics, np.asarray(stack.optics_group, dtype=np.int64)
    # Particles read at several pixel sizes (then rescaled, cryospin.io.rescale) keep theirs.
    sizes = stack.extra.get("pixel_sizes_A", np.full(n, pixel_size))
    key = np.stack(
        [stack.ctf.voltage_kV, stack.ctf.cs_mm, stack.ctf.amplitude_contrast, sizes], axis=1
    ).astype(np.float64)
    uniq, group_of = np.unique(key, axis=0, return_inverse=True)
    group_of = group_of.reshape(-1) + 1
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": np.arange(1, len(uniq) + 1),
            "rlnOpticsGroupName": [f"opticsGroup{g}" for g in range(1, len(uniq) + 1)],
            "rlnVoltage": uniq[:, 0],
            "rlnSphericalAberration": uniq[:, 1],
            "rlnAmplitudeContrast": uniq[:, 2],
            "rlnImagePixelSize": uniq[:, 3],
            "rlnImageSize": np.full(len(uniq), int(box or 0)),
            "rlnImageDimensionality": np.full(len(uniq), 2),
        }
    )
    assert len(group_of) == n
    return optics, group_of


def ctf_columns(ctf: CTFParams) -> dict[str, np.ndarray]:
    """Return the per-particle RELION CTF columns of ``ctf``."""
    cols = {
        "rlnDefocusU": ctf.defocus_u_A,
        "rlnDefocusV": ctf.defocus_v_A,
        "rlnDefocusAngle": ctf.defocus_angle_deg,
        "rlnPhaseShift": ctf.phase_shift_deg,
    }
    if ctf.bfactor_A2 is not None:
        cols["rlnCtfBfactor"] = ctf.bfactor_A2
    return cols


def _image_names(stack: ParticleStack) -> np.ndarray:
    """``N@path`` names of a stack without a STAR table: given ones, or from a ``.cs`` array."""
    if "image_names" in stack.extra:
        return np.asarray(stack.extra["image_names"], dtype=object)
    meta = stack.metadata
    if isinstance(meta, np.ndarray) and meta.dtype.names and "blob/path" in meta.dtype.names:
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in meta["blob/path"]]
        return np.array(
            [f"{int(i) + 1:06d}@{p}" for i, p in zip(meta["blob/idx"], paths, strict=True)],
            dtype=object,
        )
    raise ValueError(f"{stack.path}: no image names to write (expected extra['image_names'])")


def write_star(
    path: str | Path,
    stack: ParticleStack,
    rotations: np.ndarray | None = None,
    shifts_A: np.ndarray | None = None,
) -> None:
    """Write ``stack`` as a RELION 3.1 particle STAR file (optics block), atomically.

    Every original particle column is kept (``rlnImageName`` included, made absolute under
    ``extra["absolute_image_paths"]``, see the module docstring). The poses written are
    ``rotations`` ``(N, 3, 3)`` (RELION ``A``) and ``shifts_A`` ``(N, 2)`` (RELION origins in Å)
    when given, else the stack's own; they replace ``rlnAngleRot/Tilt/Psi`` and
    ``rlnOriginXAngst/YAngst`` (pixel origins ``rlnOriginX/Y`` of a 3.0 file are dropped, being
    superseded). A stack without a STAR table gets ``rlnImageName`` from
    ``stack.extra["image_names"]`` (:func:`new_particle_stack`) or, read from a ``.cs`` file,
    from ``blob/idx`` and ``blob/path`` (cryoSPARC's ``>`` prefix kept), plus its CTF columns.
    """
    n = len(stack)
    if stack.metadata is not None and isinstance(stack.metadata, pd.DataFrame):
        particles = stack.metadata.copy()
    else:
        particles = pd.DataFrame({"rlnImageName": _image_names(stack)})
        for name, values in ctf_columns(stack.ctf).items():
            particles[name] = values
        if stack.half_set is not None:
            particles["rlnRandomSubset"] = stack.half_set
    if len(particles) != n:
        raise ValueError(f"{path}: metadata has {len(particles)} rows for {n} particles")
    names = absolute_image_names(stack) if wants_absolute_paths(stack) else None
    if names is not None:
        particles["rlnImageName"] = names
    optics, groups = _optics_table(stack)
    particles["rlnOpticsGroup"] = groups
    rotations = stack.rotations if rotations is None else rotations
    shifts_A = stack.shifts_A if shifts_A is None else shifts_A
    if rotations is not None:
        euler = rotations_to_euler(np.asarray(rotations).reshape(n, 3, 3))
        particles["rlnAngleRot"] = euler[:, 0]
        particles["rlnAngleTilt"] = euler[:, 1]
        particles["rlnAnglePsi"] = euler[:, 2]
        if shifts_A is None:
            shifts_A = np.zeros((n, 2))
    if shifts_A is not None:
        shifts_A = np.asarray(shifts_A, dtype=np.float64).reshape(n, 2)
        particles = particles.drop(columns=["rlnOriginX", "rlnOriginY"], errors="ignore")
        particles["rlnOriginXAngst"] = shifts_A[:, 0]
        particles["rlnOriginYAngst"] = shifts_A[:, 1]
    with atomic_path(path) as tmp:
        starfile.write(
            {"optics": optics, "particles": particles}, tmp, float_format="%.10g", sep=" "
        )
        text = tmp.read_text()
        tmp.write_text("# version 30001\n" + text)


def new_particle_stack(
    image_names: list[str] | np.ndarray,
    ctf: CTFParams,
    pixel_size_A: float,
    box: int,
    rotations: np.ndarray | None = None,
    shifts_A: np.ndarray | None = None,
    half_set: np.ndarray | None = None,
    path: str | Path = "particles.star",
) -> ParticleStack:
    """Metadata of a new stack (simulated, downsampled...), ready for :func:`write_star`.

    ``image_names`` are the ``N@path`` names (1-based), e.g. from :func:`stack_image_names`.
    The images are not opened (``images`` is a reader that raises); write the stack with
    :func:`cryospin.io.mrc.write_mrc_stack` or :class:`cryospin.io.mrc.StackWriter`.
    """
    names = np.asarray(image_names, dtype=object)
    n = len(names)
    return ParticleStack(
        path=Path(path),
        images=NoImages(n, Path(path)),
        box=int(box),
        pixel_size_A=float(pixel_size_A),
        ctf=ctf,
        rotations=rotations,
        shifts_A=shifts_A,
        optics_group=None,
        half_set=None if half_set is None else np.asarray(half_set, dtype=np.int64),
        metadata=None,
        optics=None,
        extra={"format": "relion-star", "image_names": names},
    )


def stack_image_names(stack_path: str, n: int) -> np.ndarray:
    """``N@stack_path`` names for images 1..n of one stack (6-digit indices, as RELION writes)."""
    return np.array([f"{i:06d}@{stack_path}" for i in range(1, n + 1)], dtype=object)
