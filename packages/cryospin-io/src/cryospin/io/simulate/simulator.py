"""The particle simulator: the paper's synthetic protocol (Sec. 5) built from real parts.

Image formation, per particle ``i`` (forward model; RELION conventions)::

    clean_i = crop_L( IDFT_P[ CTF_i(k) * exp(-2 pi i k . t_i) * S_{R_i}(k) ] )
    image_i = clean_i + n_i,    n_i ~ N(0, sigma_i^2) white,   sigma_i^2 = var(clean_i) / SNR

* ``S_R(k)``: the exact spectrum of the ground truth projected along the beam at pose ``R_i``
  (RELION matrix ``A``, map -> image coordinates), on a grid padded to ``P = pad * L`` pixels
  (:mod:`cryospin.io.simulate.projector`; no voxel interpolation anywhere). The CTF acts on the
  padded grid, so signal delocalised by defocus leaves the box instead of wrapping around.
* ``CTF_i``: :func:`cryospin.io.simulate.ctf.evaluate_ctf` (cryoDRGN's / cryospin.core's sign,
  CTF(0) = -w): ``clean_i`` as written above is protein-**dark**, as in raw micrographs.
* **Contrast of the written stack** (``contrast``, default ``"bright"``): RELION-convention stacks
  are protein-bright (RELION extracts with inverted contrast; its CTF has the opposite sign), and
  cryospin-io inverts ``.star`` stacks by default (:func:`cryospin.io.preprocess.default_invert`),
  as cryoDRGN does. So by default the simulator writes ``-clean_i`` (+ noise): read back through
  cryospin-io with its defaults, or by RELION or cryoDRGN, the images match each tool's forward
  model. ``contrast="dark"`` writes ``clean_i`` (the raw-micrograph convention).
* ``t_i = -origin_i``: the image content is translated by minus the RELION origin
  (``rlnOriginXAngst/YAngst``), so shifting the image by ``+origin`` recentres the particle.
* **SNR definition** (the paper's code): per image, noise variance = variance over the ``L x L`` box
  of the clean, CTF-modulated, shifted projection, divided by the requested SNR. The measured SNR,
  ``var(clean_i) / var(image_i - clean_i)``, is reported in ``meta.json`` (mean, median, and
  ``mean var(clean) / mean var(noise)``).

Reproducibility: every random draw comes from ``numpy.random.default_rng`` streams derived from
``seed`` (poses, shifts, CTF rows and half-sets up front; noise per block of 256 particles), so
the same seed gives bit-identical ``particles.mrcs`` whatever ``workers`` is.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cryospin.core.errors import ConfigError
from cryospin.core.particles import CTFParams
from cryospin.io.simulate import ctf as ctf_mod
from cryospin.io.simulate.atoms import AtomModel, bundled_model_path, load_atom_model
from cryospin.io.simulate.projector import (
    AtomProjector,
    MapProjector,
    crop_indices,
    resample_map,
    rfft_frequencies,
)

#: Paper Sec. 5: ground truths of 128^3 at these pixel sizes (HSP 1.5 Å, spike 2.13 Å).
PRESETS: dict[str, dict[str, Any]] = {
    "hsp90": {
        "model": "2cg9",
        "paper_box": 128,
        "paper_pixel_A": 1.5,
        "what": "HSP90-Sba1 closed complex, PDB 2CG9 (the paper's HSP)",
    },
    "spike": {
        "model": "6vyb",
        "paper_box": 128,
        "paper_pixel_A": 2.13,
        "what": "SARS-CoV-2 spike (open), PDB 6VYB (the paper's spike)",
    },
}

BLOCK = 256  # particles per noise stream (fixed: results do not depend on the worker count)
CONTRASTS = {
    "bright": "protein bright (RELION stack convention): image = -IDFT[CTF * projection] + noise "
    "with CTF(0) = -w (cryospin.core.ctf sign), i.e. RELION's CTF times the projection; "
    "cryospin-io inverts .star stacks by default (default_invert), as cryoDRGN does",
    "dark": "protein dark (raw-micrograph convention): image = IDFT[CTF * projection] + noise "
    "with CTF(0) = -w (cryospin.core.ctf sign); read it with invert=False",
}
CONTRAST = CONTRASTS["bright"]
SNR_DEFINITION = (
    "per image: noise variance = var(clean CTF-modulated projection over the L x L box) / SNR"
)


def preset_pixel_size(preset: str, box: int) -> float:
    """Return the preset's pixel size for ``box``, keeping the paper's field of view."""
    p = PRESETS[preset]
    return p["paper_pixel_A"] * p["paper_box"] / box


class SimulationConfig(BaseModel):
    """Settings of :func:`simulate_dataset` (every one is written to ``meta.json``).

    Exactly one ground truth: ``preset``, ``model`` (PDB/mmCIF) or ``map`` (MRC).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["hsp90", "spike"] | None = None
    model: Path | None = None
    map: Path | None = None
    box: int = Field(128, ge=16, description="image side L (even)")
    pixel_size: float | None = Field(
        None, gt=0, description="Å; presets default to the paper's field of view"
    )
    n: int = Field(1000, ge=1, description="number of particles")
    snr: float = Field(0.1, gt=0, description="per-image SNR (see SNR_DEFINITION)")
    ctf: str | None = Field(
        "empiar10028",
        description="CTF table (.pkl/.star/.cs/.npz, or 'empiar10028' bundled), 'ranges', or "
        "None for no CTF",
    )
    ctf_rows: Literal["random", "sequential"] = "random"
    defocus_range: tuple[float, float] = (10000.0, 25000.0)
    astigmatism_range: tuple[float, float] = (0.0, 1000.0)
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    contrast: Literal["bright", "dark"] = "bright"
    rotations: Path | None = Field(None, description="poses file (.star, .pkl, .cs, .npy)")
    shift_sigma: float = Field(0.0, ge=0, description="Gaussian origin sigma per axis, Å")
    shift_max: float = Field(0.0, ge=0, description="uniform origins in [-max, max], Å")
    bfactor: float = Field(0.0, ge=0, description="global B-factor on the atoms, Å^2")
    pad: int = Field(2, ge=1, le=4)
    seed: int = 0
    out: Path = Path("simulated")
    write_cryodrgn: bool = True
    write_clean: bool = False
    workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        given = [x for x in (self.preset, self.model, self.map) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of preset, model or map")
        if self.box % 2:
            raise ValueError(f"box must be even, got {self.box}")
        if self.preset is None and self.pixel_size is None and self.model is not None:
            raise ValueError("pixel_size is required with a model")
        if self.shift_sigma and self.shift_max:
            raise ValueError("give shift_sigma (Gaussian) or shift_max (uniform), not both")
        return self

    @property
    def resolved_pixel_size(self) -> float:
        """The pixel size used (the preset's when none is given)."""
        if self.pixel_size is not None:
            return float(self.pixel_size)
        if self.preset is not None:
            return preset_pixel_size(self.preset, self.box)
        return float("nan")  # map input: its own voxel size (resolved when loaded)


@dataclass
class SimulationResult:
    """Paths written by :func:`simulate_dataset` and a summary."""

    out: Path
    particles_star: Path
    particles_mrcs: Path
    gt_map: Path
    meta_json: Path
    ground_truth: Path
    meta: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Random draws
# ----------------------------------------------------------------------------------------------


def haar_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` Haar-uniform rotation matrices (normalised Gaussian quaternions)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _star_round(x: np.ndarray) -> np.ndarray:
    """Round to what the STAR writer stores (``%.10g``), so what is simulated is what is read."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    return np.array([float(f"{v:.10g}") for v in flat]).reshape(np.shape(x))


def load_rotations(path: Path) -> np.ndarray:
    """Rotations ``(N, 3, 3)`` (RELION ``A``) from a .star, cryoDRGN .pkl, .cs or .npy file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        rot = np.load(path)
    elif suffix == ".star":
        from cryospin.io.star import read_star

        rot = read_star(path, images=False).rotations
    elif suffix == ".cs":
        from cryospin.io.cryosparc import read_cs

        rot = read_cs(path, images=False).rotations
    elif suffix == ".pkl":
        from cryospin.io.cryodrgn import read_poses_pkl

        rot = read_poses_pkl(path, 1, 1.0)[0]
    else:
        raise ConfigError(f"{path}: unknown rotations format (use .star, .pkl, .cs or .npy)")
    if rot is None:
        raise ConfigError(f"{path}: holds no rotations")
    rot = np.asarray(rot, dtype=np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise ConfigError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3)")
    return rot


def _quantise_poses(rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euler angles as stored in the STAR file, and the rotations they define exactly."""
    from cryospin.io.poses import euler_to_rotations, rotations_to_euler

    euler = _star_round(rotations_to_euler(rotations))
    return euler, euler_to_rotations(euler[:, 0], euler[:, 1], euler[:, 2])


def no_ctf(n: int) -> CTFParams:
    """CTF parameters that evaluate to exactly ``-1`` (``w = 1``, zero defocus, ``Cs = 0``).

    Used for ``ctf=None``: an ideal amplitude-contrast image, written to the STAR file so that
    every reader's CTF formula reproduces it.
    """
    zeros = np.zeros(n)
    return CTFParams(
        defocus_u_A=zeros.copy(),
        defocus_v_A=zeros.copy(),
        defocus_angle_deg=zeros.copy(),
        voltage_kV=np.full(n, 300.0),
        cs_mm=zeros.copy(),
        amplitude_contrast=np.ones(n),
        phase_shift_deg=zeros.copy(),
    )


def _draw_ctf(config: SimulationConfig, rng: np.random.Generator) -> tuple[CTFParams, Any]:
    n = config.n
    if config.ctf is None or str(config.ctf).lower() == "none":
        return no_ctf(n), None
    if config.ctf == "ranges":
        c = ctf_mod.ctf_from_ranges(
            rng,
            n,
            config.defocus_range,
            config.astigmatism_range,
            config.voltage,
            config.cs,
            config.amplitude_contrast,
        )
        rows = None
    else:
        table = ctf_mod.load_ctf_table(config.ctf)
        n_rows = len(table.defocus_u_A)
        if config.ctf_rows == "sequential":
            rows = np.arange(n) % n_rows
        elif n <= n_rows:
            rows = np.sort(rng.choice(n_rows, size=n, replace=False))
            rows = rng.permutation(rows)
        else:
            rows = rng.integers(0, n_rows, size=n)
        c = table.subset(rows)
    c = ctf_mod.map_ctf(c, _star_round)
    return c, rows


# ----------------------------------------------------------------------------------------------
# Rendering (runs in worker processes too)
# ----------------------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def render_clean(
    projector: AtomProjector | MapProjector,
    rotation: np.ndarray,
    shift_A: np.ndarray | None = None,
    ctf: CTFParams | None = None,
    index: int = 0,
) -> np.ndarray:
    """Render the clean image ``(L, L)`` of one particle: projection, CTF, shift ``shift_A``.

    ``shift_A`` is the translation ``(x, y)`` of the image content in Å (``-origin``).
    """
    spec = projector.spectrum(rotation)
    ky, kx = projector.ky, projector.kx
    if ctf is not None:
        spec = spec * ctf_mod.evaluate_ctf(ky, kx, ctf, index)
    if shift_A is not None and np.any(shift_A):
        spec = spec * np.exp(-2j * np.pi * (kx * shift_A[0] + ky * shift_A[1]))
    p = projector.padded
    img = np.fft.irfft2(spec, s=(p, p))
    idx = crop_indices(projector.box, p)
    return img[np.ix_(idx, idx)]


def _render_block(
    block: int,
) -> tuple[int, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    st = _STATE
    lo, hi = block * BLOCK, min((block + 1) * BLOCK, st["n"])
    rng = np.random.default_rng([st["seed"], 7, block])
    box = st["projector"].box
    images = np.empty((hi - lo, box, box), dtype=np.float32)
    clean_out = np.empty((hi - lo, box, box), dtype=np.float32) if st["keep_clean"] else None
    signal_var = np.empty(hi - lo)
    noise_var = np.empty(hi - lo)
    for j, i in enumerate(range(lo, hi)):
        clean = st["sign"] * render_clean(
            st["projector"], st["rotations"][i], st["content_shift"][i], st["ctf"], i
        )
        var = float(np.var(clean))
        sigma = math.sqrt(var / st["snr"])
        noise = rng.standard_normal(clean.shape) * sigma
        images[j] = clean + noise
        if clean_out is not None:
            clean_out[j] = clean
        signal_var[j] = var
        noise_var[j] = float(np.var(images[j].astype(np.float64) - clean))
    return block, images, clean_out, signal_var, noise_var


def _build_projector(config: SimulationConfig) -> tuple[AtomProjector | MapProjector, float, dict]:
    info: dict[str, Any] = {}
    if config.map is not None:
        from cryospin.io.mrc import read_map

        vol, voxel = read_map(config.map)
        apix = float(config.pixel_size) if config.pixel_size is not None else float(voxel)
        vol = resample_map(vol, voxel, config.box, apix)
        info.update(
            source="map",
            map=str(config.map),
            map_voxel_A=float(voxel),
            map_box=int(np.shape(vol)[0]),
        )
        return MapProjector(vol, apix, pad=config.pad), apix, info
    if config.preset is not None:
        name = PRESETS[config.preset]["model"]
        model: AtomModel = load_atom_model(bundled_model_path(name))
        info.update(
            source="atoms",
            preset=config.preset,
            model=f"bundled {name}.pdb.gz",
            what=PRESETS[config.preset]["what"],
        )
    else:
        assert config.model is not None
        model = load_atom_model(config.model)
        info.update(source="atoms", model=str(config.model))
    apix = config.resolved_pixel_size
    info.update(
        n_atoms=len(model),
        elements=model.elements,
        max_radius_A=model.max_radius_A,
        center_of_mass_A=model.center_of_mass_A.tolist(),
        form_factors="electron, International Tables C 4.3.2.2 (gemmi Element.c4322)",
    )
    half_box = 0.5 * config.box * apix
    if model.max_radius_A > half_box:
        info["warning"] = (
            f"the model reaches {model.max_radius_A:.1f} Å from its centre of mass, beyond the "
            f"half box {half_box:.1f} Å: it is cut by the box"
        )
    proj = AtomProjector(model, config.box, apix, pad=config.pad, bfactor_A2=config.bfactor)
    return proj, apix, info


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("cryospin-io", "cryospin-core", "numpy", "gemmi", "mrcfile", "starfile"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def simulate_dataset(config: SimulationConfig) -> SimulationResult:
    """Simulate a particle stack and write it (see the module docstring for the model).

    Writes into ``config.out``: ``particles.mrcs`` (float32 stack), ``particles.star`` (RELION 3.1
    with an optics block, CTF, ground-truth ``rlnAngleRot/Tilt/Psi`` and ``rlnOriginX/YAngst``,
    ``rlnRandomSubset``), ``gt_map.mrc`` (the ground-truth potential, V, on the ``L^3`` grid),
    ``ground_truth.npz`` (rotations, origins, CTF table rows, per-image signal and noise
    variances), ``meta.json`` (every setting, the measured SNR, versions) and, when
    ``write_cryodrgn``, cryoDRGN ``ctf.pkl`` and ``poses.pkl``; ``particles_clean.mrcs`` when
    ``write_clean``.

    Raises:
        ConfigError: inconsistent settings (e.g. a rotations file with too few rows).
    """
    from cryospin.io.mrc import StackWriter, write_map
    from cryospin.io.star import new_particle_stack, stack_image_names, write_star

    t0 = time.time()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    projector, apix, info = _build_projector(config)
    n = config.n
    root = np.random.SeedSequence(config.seed)
    rng_rot, rng_shift, rng_ctf, rng_half = (np.random.default_rng(s) for s in root.spawn(4))

    if config.rotations is not None:
        rot = load_rotations(Path(config.rotations))
        if len(rot) < n:
            raise ConfigError(f"{config.rotations}: {len(rot)} rotations for n = {n} particles")
        rot = rot[:n]
    else:
        rot = haar_rotations(rng_rot, n)
    euler, rot = _quantise_poses(rot)

    if config.shift_sigma > 0:
        origins = rng_shift.normal(0.0, config.shift_sigma, size=(n, 2))
    elif config.shift_max > 0:
        origins = rng_shift.uniform(-config.shift_max, config.shift_max, size=(n, 2))
    else:
        origins = np.zeros((n, 2))
    origins = _star_round(origins)
    ctf, rows = _draw_ctf(config, rng_ctf)
    half_set = rng_half.integers(1, 3, size=n)

    _STATE.clear()
    _STATE.update(
        projector=projector,
        rotations=rot,
        content_shift=-origins,
        ctf=ctf,
        n=n,
        snr=float(config.snr),
        seed=int(config.seed),
        keep_clean=bool(config.write_clean),
        sign=-1.0 if config.contrast == "bright" else 1.0,
    )
    n_blocks = (n + BLOCK - 1) // BLOCK
    signal_var = np.empty(n)
    noise_var = np.empty(n)
    stack_path = out / "particles.mrcs"
    clean_writer = (
        StackWriter(out / "particles_clean.mrcs", n, config.box, apix)
        if config.write_clean
        else None
    )
    workers = min(config.workers, n_blocks, os.cpu_count() or 1)
    with StackWriter(stack_path, n, config.box, apix) as writer:
        if workers > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers) as pool:
                results = pool.imap(_render_block, range(n_blocks))
                for block, images, clean, sv, nv in results:
                    _store(
                        block, images, clean, sv, nv, writer, clean_writer, signal_var, noise_var
                    )
        else:
            for block in range(n_blocks):
                _store(*_render_block(block), writer, clean_writer, signal_var, noise_var)
    if clean_writer is not None:
        clean_writer.close()
    _STATE.clear()

    gt = projector.ground_truth_map()
    write_map(out / "gt_map.mrc", gt.astype(np.float32), apix)
    label = f"cryospin simulate seed={config.seed}"
    for name in ("particles.mrcs", "gt_map.mrc", "particles_clean.mrcs"):
        if (out / name).is_file():
            _fix_mrc_label(out / name, label)

    ctf_params = ctf
    names = stack_image_names("particles.mrcs", n)
    stack = new_particle_stack(
        names,
        ctf_params,
        apix,
        config.box,
        rotations=rot,
        shifts_A=origins,
        half_set=half_set,
        path=out / "particles.star",
    )
    write_star(out / "particles.star", stack)
    if config.write_cryodrgn:
        from cryospin.io.cryodrgn import write_ctf_pkl, write_poses_pkl

        write_ctf_pkl(out / "ctf.pkl", ctf_params, config.box, apix)
        write_poses_pkl(out / "poses.pkl", rot, origins, config.box, apix)
    np.savez_compressed(
        out / "ground_truth.npz",
        rotations=rot,
        euler_deg=euler,
        origins_A=origins,
        ctf_rows=np.full(n, -1) if rows is None else np.asarray(rows),
        half_set=half_set,
        signal_var=signal_var,
        noise_var=noise_var,
    )
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
        "versions": _versions(),
        "seconds": round(time.time() - t0, 2),
    }
    meta["outputs"] = sorted(set(meta["outputs"]) | {"meta.json"})
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return SimulationResult(
        out=out,
        particles_star=out / "particles.star",
        particles_mrcs=stack_path,
        gt_map=out / "gt_map.mrc",
        meta_json=out / "meta.json",
        ground_truth=out / "ground_truth.npz",
        meta=meta,
    )


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


def _store(block, images, clean, sv, nv, writer, clean_writer, signal_var, noise_var) -> None:
    lo = block * BLOCK
    writer.write(images)
    if clean_writer is not None and clean is not None:
        clean_writer.write(clean)
    signal_var[lo : lo + len(sv)] = sv
    noise_var[lo : lo + len(nv)] = nv


__all__ = [
    "PRESETS",
    "SimulationConfig",
    "SimulationResult",
    "haar_rotations",
    "render_clean",
    "rfft_frequencies",
    "simulate_dataset",
]
