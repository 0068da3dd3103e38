"""Building blocks of :func:`cryospin.core.evaluation.align_maps.align_maps`.

The rotation grid of the global search (:func:`hopf_grid`) and :class:`Level`, one resolution level
of the coarse-to-fine search: a cropped, low-passed map pair scored by the Pearson correlation
inside a sphere, with an FFT translation search and an L-BFGS local refinement.
"""

from __future__ import annotations

import numpy as np
import torch

from cryospin.core.evaluation.map_ops import (
    background_level,
    centre_of_mass,
    crop,
    grid_points,
    lowpass_gaussian,
    rotate_map,
    sample,
    translation_search,
)
from cryospin.core.so3 import project_so3, quaternion_to_rotation
from cryospin.core.so3._common import _rot_y, _rot_z

__all__ = ["Level", "hopf_grid", "sphere_directions"]


def sphere_directions(n: int) -> np.ndarray:
    """Return ``n`` near-uniform unit vectors ``(n, 3)`` on the sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    rho = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)


def hopf_grid(n_directions: int = 192, n_inplane: int = 24) -> np.ndarray:
    """Return a near-uniform grid of ``n_directions * n_inplane`` rotations ``(M, 3, 3)``.

    ``R = Rz(phi) Ry(theta) Rz(psi)``: ``R e_z = (theta, phi)`` runs over
    :func:`sphere_directions` and ``psi`` over ``n_inplane`` equal steps, so the grid follows the
    Haar measure (uniform direction times uniform in-plane angle). The defaults (4,608 rotations,
    like HEALPix ``nside=4`` with 15-degree in-plane steps) are spaced about 15 degrees.
    """
    v = sphere_directions(n_directions)
    theta = np.arccos(np.clip(v[:, 2], -1.0, 1.0))
    phi = np.arctan2(v[:, 1], v[:, 0])
    psi = np.arange(n_inplane) * (2 * np.pi / n_inplane)
    th = np.repeat(theta, n_inplane)
    ph = np.repeat(phi, n_inplane)
    ps = np.tile(psi, theta.size)

    t_ph, t_th, t_ps = (torch.as_tensor(a) for a in (ph, th, ps))
    return (_rot_z(t_ph) @ _rot_y(t_th) @ _rot_z(t_ps)).numpy()


def _increment(omega: torch.Tensor) -> torch.Tensor:
    """Rotation of the normalised quaternion ``(1, omega / 2)``: ``~exp(omega)``, smooth at 0."""
    return quaternion_to_rotation(torch.cat([torch.ones(1, dtype=omega.dtype), 0.5 * omega]))


class Level:
    """One resolution level: a cropped, low-passed map pair and the scoring points."""

    def __init__(
        self,
        ref: np.ndarray,
        mov: np.ndarray,
        box: int,
        sigma_frac: float,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        d = ref.shape[0]
        self.box = min(box, d)
        self.scale = d / self.box  # full-size voxels per level voxel
        self.dtype = dtype
        # solvent at 0, so that samples from outside the box (read as 0) look like solvent
        r = lowpass_gaussian(crop(ref - background_level(ref), self.box), sigma_frac * 0.5)
        m = lowpass_gaussian(crop(mov - background_level(mov), self.box), sigma_frac * 0.5)
        self.ref_np = r
        self.mov_np = m
        self.mov = torch.as_tensor(m, dtype=dtype)
        self.pts = grid_points(self.box, radius=self.box / 2 - 1).to(dtype)
        vals = sample(torch.as_tensor(r, dtype=dtype), self.pts)
        vals = vals - vals.mean()
        self.ref_vals = vals / torch.linalg.vector_norm(vals).clamp_min(1e-30)
        self.com_ref = centre_of_mass(r)
        self.com_mov = centre_of_mass(m)

    def score(self, rot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Correlation for rotations ``(B, 3, 3)`` and translations ``(B, 3)`` (level voxels)."""
        src = (self.pts[None] - t[:, None, :].to(self.dtype)) @ rot.to(self.dtype)
        v = sample(self.mov, src)
        v = v - v.mean(-1, keepdim=True)
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-30)
        return v @ self.ref_vals

    def score_np(self, rot: np.ndarray, t: np.ndarray) -> float:
        """Correlation of a single ``(rot, t)``."""
        with torch.no_grad():
            return float(self.score(torch.as_tensor(rot)[None], torch.as_tensor(t)[None])[0])

    def shift_search(self, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Best integer translation update by FFT cross-correlation of the aligned and ref maps."""
        moved = rotate_map(self.mov_np, rot, t)
        return t + translation_search(self.ref_np, moved, subvoxel=False)

    def refine(
        self, rot: np.ndarray, t: np.ndarray, iters: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Local L-BFGS (scipy, torch gradients) maximisation over rotation and translation.

        The rotation increment is scaled by the mask radius so that a unit step of any parameter
        moves the map's edge by about one voxel (a well-conditioned problem).
        """
        from scipy.optimize import minimize

        r0 = torch.as_tensor(rot, dtype=torch.float64)
        lever = max(self.box / 4.0, 1.0)

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            p = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
            loss = -self.score((_increment(p[:3] / lever) @ r0)[None], p[None, 3:])[0]
            loss.backward()
            assert p.grad is not None
            return float(loss.detach()), p.grad.numpy().astype(np.float64)

        x0 = np.concatenate([np.zeros(3), np.asarray(t, dtype=np.float64)])
        res = minimize(
            fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": iters, "maxfun": 2 * iters}
        )
        x = res.x if res.fun <= fun(x0)[0] else x0
        with torch.no_grad():
            r = project_so3((_increment(torch.as_tensor(x[:3] / lever)) @ r0).numpy())
        t_new = np.asarray(x[3:], dtype=np.float64)
        return r, t_new, self.score_np(r, t_new)
