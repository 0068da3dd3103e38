"""Synthetic test maps: sums of anisotropic Gaussian blobs (compact, without symmetry)."""

from __future__ import annotations

import numpy as np

from cryospin.core.evaluation.map_ops import grid_points

__all__ = ["blob_map"]


def blob_map(box: int = 48, seed: int = 0, n_blobs: int = 6) -> np.ndarray:
    """Return a ``(box, box, box)`` float32 map ``[z, y, x]`` of random anisotropic Gaussian blobs.

    Blob centres lie within 0.22 box of the centre and widths are 3-9 % of the box, so the map is
    compact (near zero at the border) and, for random seeds, has no rotational or mirror symmetry.
    """
    rng = np.random.default_rng(seed)
    pts = grid_points(box).numpy().reshape(box, box, box, 3)
    vol = np.zeros((box, box, box))
    for _ in range(n_blobs):
        centre = rng.uniform(-0.22, 0.22, 3) * box
        axes = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        widths = rng.uniform(0.03, 0.09, 3) * box
        q = (pts - centre) @ axes
        vol += rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((q / widths) ** 2).sum(-1))
    return vol.astype(np.float32)
