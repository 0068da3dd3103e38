"""What the simulator writes besides the image stacks: ground-truth map, metadata, ``meta.json``.

See :func:`cryospin.io.simulate.simulator.simulate_dataset` for the list of files.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.atomic import atomic_path
from cryospin.core.particles import CTFParams
from cryospin.io.simulate.config import CONTRASTS, SNR_DEFINITION, SimulationConfig
from cryospin.io.simulate.projector import AtomProjector, MapProjector


def write_outputs(
    config: SimulationConfig,
    projector: AtomProjector | MapProjector,
    apix: float,
    ctf: CTFParams,
    truth: dict[str, Any],
) -> None:
    """Write ``gt_map.mrc``, ``particles.star``, cryoDRGN pickles and ``ground_truth.npz``.

    ``truth`` holds the arrays of ``ground_truth.npz`` (``rotations``, ``euler_deg``,
    ``origins_A``, ``ctf_rows``, ``half_set``, ``signal_var``, ``noise_var``); the MRC labels are
    fixed so that the same seed gives byte-identical files.
    """
    from cryospin.io.mrc import write_map
    from cryospin.io.star_write import new_particle_stack, stack_image_names, write_star

    out = Path(config.out)
    rot, origins = truth["rotations"], truth["origins_A"]
    write_map(out / "gt_map.mrc", projector.ground_truth_map().astype(np.float32), apix)
    label = f"cryospin simulate seed={config.seed}"
    for name in ("particles.mrcs", "gt_map.mrc", "particles_clean.mrcs"):
        if (out / name).is_file():
            _fix_mrc_label(out / name, label)
    stack = new_particle_stack(
        stack_image_names("particles.mrcs", config.n),
        ctf,
        apix,
        config.box,
        rotations=rot,
        shifts_A=origins,
        half_set=truth["half_set"],
        path=out / "particles.star",
    )
    write_star(out / "particles.star", stack)
    if config.write_cryodrgn:
        from cryospin.io.cryodrgn import write_ctf_pkl, write_poses_pkl

        write_ctf_pkl(out / "ctf.pkl", ctf, config.box, apix)
        write_poses_pkl(out / "poses.pkl", rot, origins, config.box, apix)
    with atomic_path(out / "ground_truth.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **truth)


def meta_record(
    config: SimulationConfig,
    apix: float,
    info: dict[str, Any],
    signal_var: np.ndarray,
    noise_var: np.ndarray,
    seconds: float,
) -> dict[str, Any]:
    """Return the ``meta.json`` record: settings, measured SNR, conventions, outputs, versions."""
    out = Path(config.out)
    measured = signal_var / noise_var
    meta = {
        "tool": "cryospin simulate",
        "settings": json.loads(config.model_dump_json()),
        "pixel_size_A": apix,
        "box": config.box,
        "ground_truth": info,
        "snr_definition": SNR_DEFINITION,
        "snr_requested": config.snr,
        "snr_measured": {
            "mean": float(measured.mean()),
            "median": float(np.median(measured)),
            "ratio_of_means": float(signal_var.mean() / noise_var.mean()),
        },
        "contrast": config.contrast,
        "contrast_definition": CONTRASTS[config.contrast],
        "noise": "white Gaussian, independent per pixel and image",
        "shift_convention": "image content translated by -origin (rlnOriginXAngst/YAngst)",
        "projection": "exact: atoms/voxels -> Fourier transform at the DFT frequencies by "
        "Gaussian-gridding NUFFT (no voxel interpolation); CTF applied on a grid padded "
        f"{config.pad}x, then cropped; Nyquist planes removed",
        "ctf_source": config.ctf
        if config.ctf is not None
        else "none: CTF = -1 (w = 1, zero defocus, Cs = 0, as written to the STAR)",
        "image_units": "volts (ground-truth potential summed along the beam), before CTF",
        "outputs": sorted(p.name for p in out.iterdir()),
        "versions": versions(),
        "seconds": round(seconds, 2),
    }
    meta["outputs"] = sorted(set(meta["outputs"]) | {"meta.json"})
    return meta


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the output (``unknown`` if absent)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("cryospin-io", "cryospin-core", "numpy", "gemmi", "mrcfile", "starfile"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _fix_mrc_label(path: Path, label: str) -> None:
    """Replace the first MRC header label (mrcfile writes a creation time there) by ``label``.

    The same seed then gives byte-identical files.
    """
    text = label.encode("ascii", "replace")[:80].ljust(80)
    with open(path, "r+b") as fh:
        fh.seek(220)
        nlabl = int(np.frombuffer(fh.read(4), dtype="<i4")[0])
        fh.seek(220)
        fh.write(np.array([max(nlabl, 1)], dtype="<i4").tobytes())
        fh.write(text)
