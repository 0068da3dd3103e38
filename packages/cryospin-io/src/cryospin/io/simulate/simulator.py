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
  cryospin-io inverts ``.star`` stacks by default (:func:`cryospin.io.contrast.default_invert`),
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
import time
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.atomic import atomic_write_text
from cryospin.core.errors import ConfigError
from cryospin.core.particles import CTFParams
from cryospin.io.simulate import ctf as ctf_mod
from cryospin.io.simulate.config import SimulationConfig, SimulationResult
from cryospin.io.simulate.draws import (
    draw_ctf,
    draw_origins,
    haar_rotations,
    load_rotations,
    quantise_poses,
)
from cryospin.io.simulate.outputs import meta_record, write_outputs
from cryospin.io.simulate.projector import (
    AtomProjector,
    MapProjector,
    build_projector,
    crop_indices,
)

BLOCK = 256  # particles per noise stream (fixed: results do not depend on the worker count)

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


def _init_worker(state: dict[str, Any]) -> None:
    """Pool initializer: install the render state in a spawned worker, one torch thread each."""
    import torch

    torch.set_num_threads(1)
    _STATE.update(state)


def _render_block(
    block: int,
) -> tuple[int, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    st = _STATE
    size = st["block"]
    lo, hi = block * size, min((block + 1) * size, st["n"])
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


def _draw_poses(
    config: SimulationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Euler angles as stored and the rotations they define: from ``config.rotations`` or Haar."""
    n = config.n
    if config.rotations is not None:
        rot = load_rotations(Path(config.rotations))
        if len(rot) < n:
            raise ConfigError(f"{config.rotations}: {len(rot)} rotations for n = {n} particles")
        rot = rot[:n]
    else:
        rot = haar_rotations(rng, n)
    return quantise_poses(rot)


def _render_stacks(
    config: SimulationConfig,
    projector: AtomProjector | MapProjector,
    rot: np.ndarray,
    origins: np.ndarray,
    ctf: CTFParams,
    apix: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Render and write ``particles.mrcs`` (and ``particles_clean.mrcs``) block by block.

    Returns the per-image signal and noise variances ``(n,)``.
    """
    from cryospin.io.mrc import StackWriter

    out, n = Path(config.out), config.n
    _STATE.clear()
    _STATE.update(
        projector=projector,
        rotations=rot,
        content_shift=-origins,
        ctf=ctf,
        n=n,
        block=BLOCK,
        snr=float(config.snr),
        seed=int(config.seed),
        keep_clean=bool(config.write_clean),
        sign=-1.0 if config.contrast == "bright" else 1.0,
    )
    n_blocks = (n + BLOCK - 1) // BLOCK
    signal_var = np.empty(n)
    noise_var = np.empty(n)
    clean_writer = (
        StackWriter(out / "particles_clean.mrcs", n, config.box, apix)
        if config.write_clean
        else None
    )
    workers = min(config.workers, n_blocks, os.cpu_count() or 1)
    with StackWriter(out / "particles.mrcs", n, config.box, apix) as writer:
        if workers > 1:
            # spawn, not fork: a fork after torch started its thread pool can deadlock the child
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(dict(_STATE),)) as pool:
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
    return signal_var, noise_var


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
    t0 = time.time()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    projector, apix, info = build_projector(config)
    n = config.n
    root = np.random.SeedSequence(config.seed)
    rng_rot, rng_shift, rng_ctf, rng_half = (np.random.default_rng(s) for s in root.spawn(4))
    euler, rot = _draw_poses(config, rng_rot)
    origins = draw_origins(config, rng_shift)
    ctf, rows = draw_ctf(config, rng_ctf)
    half_set = rng_half.integers(1, 3, size=n)
    signal_var, noise_var = _render_stacks(config, projector, rot, origins, ctf, apix)

    truth = {
        "rotations": rot,
        "euler_deg": euler,
        "origins_A": origins,
        "ctf_rows": np.full(n, -1) if rows is None else np.asarray(rows),
        "half_set": half_set,
        "signal_var": signal_var,
        "noise_var": noise_var,
    }
    write_outputs(config, projector, apix, ctf, truth)
    meta = meta_record(config, apix, info, signal_var, noise_var, time.time() - t0)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return SimulationResult(
        out=out,
        particles_star=out / "particles.star",
        particles_mrcs=out / "particles.mrcs",
        gt_map=out / "gt_map.mrc",
        meta_json=out / "meta.json",
        ground_truth=out / "ground_truth.npz",
        meta=meta,
    )


def _store(block, images, clean, sv, nv, writer, clean_writer, signal_var, noise_var) -> None:
    lo = block * BLOCK
    writer.write(images)
    if clean_writer is not None and clean is not None:
        clean_writer.write(clean)
    signal_var[lo : lo + len(sv)] = sv
    noise_var[lo : lo + len(nv)] = nv


__all__ = ["render_clean", "simulate_dataset"]
