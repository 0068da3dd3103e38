"""A tiny synthetic particle stack for the engine's tests (Gaussian-blob volume, real CTF model).

Projections are computed from a 2x zero-padded volume (so they do not share the reconstructor's
interpolation error), multiplied by a CTF and corrupted with white Gaussian noise at a given SNR.
Written through cryospin-io (STAR + MRC stack + truth map), so ``cryospin run`` reads it like real
data. Not a test module itself (no ``test_`` prefix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryospin.core.fourier import fft2_centered, fft3_centered, ifft2_centered
from cryospin.core.particles import CTFParams
from cryospin.core.slicing import extract_central_slices
from cryospin.core.so3 import random_rotations


def blob_volume(box: int, seed: int = 0, n_blobs: int = 8) -> torch.Tensor:
    """An asymmetric volume of Gaussian blobs inside radius ``box / 4``."""
    g = torch.Generator().manual_seed(seed)
    c = torch.arange(box, dtype=torch.float64) - box // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(box, box, box, dtype=torch.float64)
    for _ in range(n_blobs):
        p = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * box * 0.45
        s = box * (0.04 + 0.05 * torch.rand(1, generator=g, dtype=torch.float64))
        w = 0.5 + torch.rand(1, generator=g, dtype=torch.float64)
        vol += w * torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * s**2))
    return vol


def project(vol: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Accurate projections ``(N, L, L)`` (2x padded Fourier slicing)."""
    box = vol.shape[-1]
    pad = torch.zeros(2 * box, 2 * box, 2 * box, dtype=vol.dtype)
    lo = box // 2
    pad[lo : lo + box, lo : lo + box, lo : lo + box] = vol
    f = fft3_centered(pad)
    sl = extract_central_slices(f, rotations.to(vol.dtype))
    img = ifft2_centered(sl).real
    return img[:, lo : lo + box, lo : lo + box]


def make_ctf(n: int, seed: int) -> CTFParams:
    rng = np.random.default_rng(seed)
    du = rng.uniform(8000, 20000, n)
    return CTFParams(
        defocus_u_A=du,
        defocus_v_A=du - rng.uniform(0, 500, n),
        defocus_angle_deg=rng.uniform(0, 180, n),
        voltage_kV=np.full(n, 300.0),
        cs_mm=np.full(n, 2.0),
        amplitude_contrast=np.full(n, 0.1),
        phase_shift_deg=np.zeros(n),
    )


def make_dataset(
    folder: Path,
    n: int = 96,
    box: int = 16,
    pixel_size_A: float = 6.0,
    snr: float = 1.0,
    seed: int = 0,
    max_shift_px: float = 0.0,
) -> dict:
    """Write ``particles.star``, ``particles.mrcs`` and ``truth.mrc`` into ``folder``."""
    from cryospin.core.ctf import ctf_from_params
    from cryospin.io.mrc import write_map, write_mrc_stack
    from cryospin.io.star import new_particle_stack, stack_image_names, write_star

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vol = blob_volume(box, seed)
    g = torch.Generator().manual_seed(seed + 1)
    rots = random_rotations(n, generator=g, dtype=torch.float64)
    clean = project(vol, rots)
    ctf = make_ctf(n, seed)
    c = ctf_from_params(ctf, box, pixel_size_A, dtype=torch.float64)
    f = fft2_centered(clean) * c
    shifts = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * max_shift_px
    from cryospin.core.slicing import phase_shift

    f = phase_shift(f, shifts)
    img = ifft2_centered(f).real
    sig = img.std()
    img = img + torch.randn(img.shape, generator=g, dtype=torch.float64) * sig / np.sqrt(snr)
    # protein-bright, as RELION stacks are (the engine inverts .star stacks by default)
    write_mrc_stack(folder / "particles.mrcs", (-img).float().numpy(), pixel_size_A)
    stack = new_particle_stack(
        stack_image_names("particles.mrcs", n),
        ctf,
        pixel_size_A,
        box,
        rotations=rots.numpy(),
        shifts_A=(-shifts * pixel_size_A).numpy(),
        path=folder / "particles.star",
    )
    write_star(folder / "particles.star", stack)
    write_map(folder / "truth.mrc", vol.float().numpy(), pixel_size_A)
    return {
        "star": folder / "particles.star",
        "truth": folder / "truth.mrc",
        "volume": vol,
        "rotations": rots,
        "shifts_px": shifts,
        "ctf": ctf,
        "pixel_size_A": pixel_size_A,
    }
