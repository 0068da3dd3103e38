"""Spectral SNR per Fourier shell of particle stacks: where the CTF leaves the signal (issue 12).

For each stack: the noise variance is measured on the pixels outside 0.45 L of the centre
(white noise assumed, as the simulator makes it), the radially averaged power spectrum of the
mean-subtracted images is divided by the noise's, and ``SNR_k = P_k / N_k - 1`` is printed every
second shell, with the share of the total (pixel-summed) signal inside 8-24 shells.

Measured 2026-12-06 (suite stacks, 2,000 particles each; shells 2, 4, 6, 8 and 16):

* hsp90 (2.87 Å/px): 2.96, 2.07, 0.89, 0.15 ... 0.05; 78% of the signal within 8 shells
* ribosome (7.06 Å/px, same CTFs): 2.12, 0.38, 0.26, 0.21 ... 0.16; 49% within 8 shells
* ribosome, defocus x 6 (``--ctf ranges --defocus-range 88000 158000``): 3.97, 1.73, 0.98,
  0.15 ... 0.04; 84% (the CTF's pattern in pixel units moved to hsp90's)
* hsp90, defocus / 6 (``--defocus-range 2430 4300``): 1.32, 0.38, 0.21, 0.16 ... 0.22; 29%

Example::

    .venv/bin/python bench/spectral_snr.py bench/out/suite/*/data/particles.mrcs
"""

from __future__ import annotations

import argparse

import mrcfile
import numpy as np


def spectral_snr(path: str, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(SNR_k, pixels_k)`` for shells ``k = 0 .. L/2`` of the first ``n`` images of a stack."""
    p = np.asarray(mrcfile.mmap(path, permissive=True).data[:n], dtype=np.float64)
    L = p.shape[-1]
    yy, xx = np.indices((L, L)) - L // 2
    r = np.hypot(yy, xx)
    noise = p[:, r > 0.45 * L].var()
    f = np.fft.fftshift(np.fft.fft2(p - p.mean(axis=(1, 2), keepdims=True)), axes=(-2, -1))
    power = (np.abs(f) ** 2).mean(0) / (L * L * noise)  # white noise -> 1
    k = np.round(r).astype(int).ravel()
    count = np.bincount(k)
    profile = np.bincount(k, power.ravel()) / count
    return profile[: L // 2 + 1] - 1.0, count[: L // 2 + 1]


def main() -> None:
    """Print each stack's spectral SNR and cumulative signal share."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stacks", nargs="+", help=".mrcs particle stacks")
    p.add_argument("--n", type=int, default=2000, help="images read per stack")
    args = p.parse_args()
    for path in args.stacks:
        snr, count = spectral_snr(path, args.n)
        signal = (snr * count)[1:].clip(0)
        share = np.cumsum(signal) / signal.sum()
        print(path)
        print("  SNR_k, k = 2, 4, ...:", " ".join(f"{x:.2f}" for x in snr[2::2]))
        shells = [k for k in (8, 12, 16, 20, 24) if k <= len(share)]
        print("  signal share within", ", ".join(f"{k}: {share[k - 1]:.2f}" for k in shells))


if __name__ == "__main__":
    main()
