"""cryoSPARC particle arrays for stacks not read from a ``.cs`` file (RELION STAR, bare MRC).

:func:`particle_array` builds the fields a cryoSPARC particle file carries (the dtypes cryoSPARC
writes): ``uid`` (u8), ``blob/path`` (bytes), ``blob/idx`` (u4, 0-based), ``blob/shape`` (u4
``(2,)``), ``blob/psize_A``, ``blob/sign`` (f4), ``ctf/type`` (``b"imported"``),
``ctf/exp_group_id`` (the optics group), ``ctf/accel_kv``, ``ctf/cs_mm``, ``ctf/amp_contrast``,
``ctf/df1_A``, ``ctf/df2_A``, ``ctf/df_angle_rad``, ``ctf/phase_shift_rad``, ``ctf/scale`` (1),
``ctf/bfactor`` (f4) and, with half-sets, ``alignments3D/split`` (0/1).
:func:`cryospin.io.cryosparc.write_cs` adds the poses (``alignments3D/pose``, ``shift``,
``psize_A``).

``blob/sign`` follows the convention :func:`cryospin.io.contrast.default_invert` reads back:
``+1`` for a stack used with contrast inversion (protein-bright on disk), ``-1`` without
(protein-dark), taken from ``stack.extra["invert_contrast"]`` (what ``cryospin run`` applied)
or else the format's default. ``blob/path`` is the absolute path of each image's stack when the
images were opened (:mod:`cryospin.io.image_locations`), else the path of its ``N@path`` name.
"""

from __future__ import annotations

import zlib

import numpy as np

from cryospin.core.particles import ParticleStack
from cryospin.io.image_locations import image_locations, wants_absolute_paths
from cryospin.io.paths import split_image_names


def _blobs(stack: ParticleStack) -> tuple[np.ndarray, np.ndarray]:
    """``(blob/idx (N,), blob/path (N,) bytes)`` from the opened stacks or the image names."""
    loc = image_locations(stack)
    if loc is None:
        meta = stack.metadata
        names = (
            meta["rlnImageName"].to_numpy()
            if hasattr(meta, "columns") and "rlnImageName" in meta.columns
            else stack.extra.get("image_names")
        )
        if names is None:
            raise ValueError(f"{stack.path}: no image names to write (images not opened)")
        loc = split_image_names(names, stack.path)
    numbers, paths = loc
    return numbers, np.array([str(p).encode() for p in paths])


def blob_sign(stack: ParticleStack) -> float:
    """``blob/sign`` of ``stack``: +1 when used with contrast inversion, -1 without."""
    invert = stack.extra.get("invert_contrast")
    if invert is None:
        from cryospin.io.contrast import default_invert

        invert = default_invert(stack)
    return 1.0 if invert else -1.0


def particle_array(stack: ParticleStack) -> np.ndarray:
    """Build a cryoSPARC particle array (no poses) describing ``stack`` (see the module doc)."""
    n = len(stack)
    box, pixel = stack.box, stack.pixel_size_A
    numbers, paths = _blobs(stack)
    ctf = stack.ctf
    fields = [
        ("uid", "<u8", ()),
        ("blob/path", f"S{max(1, max((len(p) for p in paths), default=1))}", ()),
        ("blob/idx", "<u4", ()),
        ("blob/shape", "<u4", (2,)),
        ("blob/psize_A", "<f4", ()),
        ("blob/sign", "<f4", ()),
        ("ctf/type", "S9", ()),
        ("ctf/exp_group_id", "<u4", ()),
        ("ctf/accel_kv", "<f4", ()),
        ("ctf/cs_mm", "<f4", ()),
        ("ctf/amp_contrast", "<f4", ()),
        ("ctf/df1_A", "<f4", ()),
        ("ctf/df2_A", "<f4", ()),
        ("ctf/df_angle_rad", "<f4", ()),
        ("ctf/phase_shift_rad", "<f4", ()),
        ("ctf/scale", "<f4", ()),
        ("ctf/bfactor", "<f4", ()),
    ]
    if stack.half_set is not None:
        fields.append(("alignments3D/split", "<u4", ()))
    data = np.zeros(n, dtype=np.dtype(fields))
    seed = zlib.crc32(str(stack.path).encode())
    data["uid"] = np.random.default_rng(seed).integers(1, 2**63, size=n, dtype=np.uint64)
    data["blob/path"], data["blob/idx"] = paths, numbers
    data["blob/shape"] = int(box or 0)
    data["blob/psize_A"] = pixel
    data["blob/sign"] = blob_sign(stack)
    data["ctf/type"] = b"imported"
    groups = stack.optics_group if stack.optics_group is not None else np.ones(n)
    data["ctf/exp_group_id"] = np.asarray(groups)
    data["ctf/accel_kv"] = ctf.voltage_kV
    data["ctf/cs_mm"] = ctf.cs_mm
    data["ctf/amp_contrast"] = ctf.amplitude_contrast
    data["ctf/df1_A"], data["ctf/df2_A"] = ctf.defocus_u_A, ctf.defocus_v_A
    data["ctf/df_angle_rad"] = np.deg2rad(ctf.defocus_angle_deg)
    data["ctf/phase_shift_rad"] = np.deg2rad(ctf.phase_shift_deg)
    data["ctf/scale"] = 1.0
    data["ctf/bfactor"] = 0.0 if ctf.bfactor_A2 is None else ctf.bfactor_A2
    if stack.half_set is not None:
        data["alignments3D/split"] = np.asarray(stack.half_set) - 1
    return data


def rewrite_cs_array(data: np.ndarray, stack: ParticleStack) -> np.ndarray:
    """Return ``data`` (the ``.cs`` array ``stack`` was read from) as ``stack`` now describes it.

    Under ``extra["absolute_image_paths"]``, when the images were opened, ``blob/path`` becomes
    each image's absolute stack path (``blob/idx`` kept, ``blob/path`` widened as needed); under
    ``extra["pixel_size_override"]`` (``--apix``), ``blob/psize_A`` becomes the stack's pixel
    size. Otherwise ``data`` is returned as it is.
    """
    names = data.dtype.names or ()
    if stack.extra.get("pixel_size_override") and "blob/psize_A" in names:
        data = data.copy()
        data["blob/psize_A"] = stack.pixel_size_A
    loc = image_locations(stack) if wants_absolute_paths(stack) else None
    if loc is None or "blob/path" not in names:
        return data
    paths = np.array([str(p).encode() for p in loc[1]])
    descr = [(n, paths.dtype if n == "blob/path" else data.dtype[n]) for n in names]
    out = np.zeros(len(data), dtype=np.dtype(descr))
    for name in names:
        out[name] = paths if name == "blob/path" else data[name]
    return out
