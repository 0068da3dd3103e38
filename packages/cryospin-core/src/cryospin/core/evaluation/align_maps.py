"""Rigid alignment of two 3D maps: global rotation search over SO(3) and the hand, then refinement.

Conventions
-----------
* Maps are cubic ``(D, D, D)`` arrays indexed ``[z, y, x]`` (MRC order). Coordinates are in voxels,
  ordered ``(x, y, z)``, relative to the centre voxel ``D // 2`` (RELION's centre, CONVENTIONS
  item 3), for even and odd ``D``.
* :func:`rotate_map` ``(vol, R, t)`` returns ``out(x) = vol(R^T (x - t))``: the map content is
  rotated by ``R`` about the centre, then translated by ``t``. A feature at ``y`` moves to
  ``R y + t``. Sampling is trilinear (``torch.nn.functional.grid_sample``,
  ``align_corners=True`` with index ``i`` at normalised coordinate ``2 i / (D - 1) - 1``, so the
  centre stays exactly on the centre voxel; the grid's last dimension is ``(x, y, z)``,
  CONVENTIONS item 4); points outside the box read ``fill`` (default 0).
* :func:`flip_hand` mirrors ``z -> -z`` about the centre: ``out(x, y, z) = vol(x, y, -z)``.
* :func:`align_maps` ``(ref, moving)`` finds ``flipped``, ``R`` and ``t`` such that
  ``rotate_map(flip_hand(moving) if flipped else moving, R, t)`` best matches ``ref``.
  In pose terms (RELION ``A``, see :mod:`cryospin.core.evaluation.pose_error`): the particles'
  poses of ``moving`` expressed in ``ref``'s frame are ``H(A) @ R.T`` with ``H(A) = F A F`` when
  flipped (``F = diag(1, 1, -1)``), which is what ``pose_error.apply_pose_alignment`` computes.

Algorithm
---------
1. Both maps are Fourier-cropped to ``search_box`` (default 16) and Gaussian low-passed; each map's
   centre of mass (positive density above the background) gives the initial translation.
2. For each hand, a uniform grid (:func:`hopf_grid`: 192 directions times 24 in-plane angles,
   4,608 rotations about 15 degrees apart) is scored by the real-space (Pearson) correlation
   inside a sphere, in batched float32 ``grid_sample`` calls.
3. The ``top_k`` best distinct candidates are refined on maps cropped to ``mid_box`` (24): an FFT
   cross-correlation translation search, then L-BFGS (scipy, torch gradients) over a
   quaternion-parametrised rotation increment and the translation.
4. The winner is refined again on maps cropped to ``refine_box`` (48) with a milder low-pass, and
   the transform is applied to the full-size, unfiltered ``moving`` map.

Scoring uses each map minus its solvent level (:func:`background_level`, the median outside the
inscribed sphere), so the zeros read from outside the box look like solvent; the final aligned
map is filled with ``moving``'s solvent level there. The correlation is insensitive to the maps'
scale and offset.

On 64^3 maps this takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tnf

__all__ = [
    "AlignmentInfo",
    "align_maps",
    "apply_alignment",
    "background_level",
    "flip_hand",
    "hopf_grid",
    "lowpass_gaussian",
    "real_space_correlation",
    "rotate_map",
    "sphere_directions",
]


# --------------------------------------------------------------------------------------------
# Small map utilities
# --------------------------------------------------------------------------------------------


def _to_numpy(vol: Any) -> np.ndarray:
    if hasattr(vol, "detach"):
        vol = vol.detach().cpu().numpy()
    arr = np.asarray(vol)
    if arr.ndim != 3 or len(set(arr.shape)) != 1:
        raise ValueError(f"a map must be a cubic (D, D, D) array, got shape {arr.shape}")
    return arr


def flip_hand(vol: Any) -> Any:
    """Mirror a map ``z -> -z`` about the centre ``c = D // 2``: ``out[z] = vol[(2c - z) % D]``.

    For odd ``D`` this is ``vol[::-1]``; for even ``D`` the reversal is rolled by one voxel so that
    the centre ``D // 2`` stays fixed (the first plane, which has no mirror partner, maps onto
    itself). An involution. Numpy in, numpy out; torch in, torch out.
    """
    if isinstance(vol, torch.Tensor):
        flipped = torch.flip(vol, dims=(-3,))
        return torch.roll(flipped, 1, dims=-3) if vol.shape[-3] % 2 == 0 else flipped
    arr = np.asarray(vol)
    out = arr[::-1]
    return np.roll(out, 1, axis=0) if arr.shape[0] % 2 == 0 else out.copy()


def _crop(vol: np.ndarray, box: int) -> np.ndarray:
    """Fourier-crop to ``box`` (:func:`cryospin.core.fourier.fourier_crop`; mean preserved).

    The real-space centre ``D // 2`` maps to ``box // 2``, so a shift of ``s`` voxels at size
    ``box`` is ``s * D / box`` voxels at size ``D``.
    """
    from cryospin.core.fourier import fourier_crop

    arr = np.asarray(vol, dtype=np.float64)
    if box >= arr.shape[0]:
        return arr.copy()
    return fourier_crop(torch.as_tensor(arr), box, ndim=3).numpy()


def lowpass_gaussian(vol: np.ndarray, sigma_per_voxel: float) -> np.ndarray:
    """Multiply the spectrum by ``exp(-f^2 / (2 sigma^2))``, ``f`` in cycles per voxel."""
    arr = np.asarray(vol, dtype=np.float64)
    freqs = [np.fft.fftfreq(n) for n in arr.shape]
    fz, fy, fx = np.meshgrid(*freqs, indexing="ij")
    g = np.exp(-(fx**2 + fy**2 + fz**2) / (2 * sigma_per_voxel**2))
    return np.fft.ifftn(np.fft.fftn(arr) * g).real


def _grid_points(box: int, radius: float | None = None) -> torch.Tensor:
    """Voxel coordinates ``(x, y, z)`` from the centre, ``(P, 3)``, optionally in a sphere."""
    r = torch.arange(box, dtype=torch.float64) - box // 2
    z, y, x = torch.meshgrid(r, r, r, indexing="ij")
    pts = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
    if radius is not None:
        pts = pts[(pts * pts).sum(-1) <= radius * radius]
    return pts


def _sample(vol: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``vol`` ``(D, D, D)`` at centred voxel coordinates ``(..., 3)``."""
    d = vol.shape[-1]
    g = (pts + d // 2) * (2.0 / (d - 1)) - 1.0
    out = tnf.grid_sample(
        vol[None, None],
        g.reshape(1, -1, 1, 1, 3).to(vol.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out.reshape(pts.shape[:-1])


def rotate_map(
    vol: Any,
    rotation: Any,
    shift_vox: Any = (0.0, 0.0, 0.0),
    *,
    flip: bool = False,
    fill: float = 0.0,
) -> np.ndarray:
    """Resample ``out(x) = vol(R^T (x - t))`` trilinearly; ``t`` in voxels ``(x, y, z)``.

    With ``flip=True`` the map is hand-flipped (:func:`flip_hand`) first. Points that fall
    outside the box read ``fill`` (e.g. the map's background level, :func:`background_level`).
    Returns float numpy with the input's floating dtype (float32 for integer input).
    """
    arr = _to_numpy(vol)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    if flip:
        arr = flip_hand(arr)
    d = arr.shape[0]
    r = torch.as_tensor(np.asarray(rotation, dtype=np.float64))
    t = torch.as_tensor(np.asarray(shift_vox, dtype=np.float64))
    pts = _grid_points(d)
    src = (pts - t) @ r  # row form of R^T (x - t)
    base = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float64)
    out = _sample(base - fill, src) + fill if fill else _sample(base, src)
    return out.reshape(d, d, d).numpy().astype(dtype)


def background_level(vol: Any) -> float:
    """Median of the voxels outside the sphere inscribed in the box (the solvent level)."""
    arr = np.asarray(_to_numpy(vol), dtype=np.float64)
    d = arr.shape[0]
    r = np.arange(d) - d // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    outside = (x * x + y * y + z * z) > (d / 2) ** 2
    return float(np.median(arr[outside])) if outside.any() else 0.0


def real_space_correlation(a: Any, b: Any, mask: Any | None = None) -> float:
    """Pearson correlation of two maps, over the voxels where ``mask > 0.5`` (all when ``None``)."""
    x = np.asarray(_to_numpy(a), dtype=np.float64)
    y = np.asarray(_to_numpy(b), dtype=np.float64)
    if mask is not None:
        keep = np.asarray(mask) > 0.5
        x, y = x[keep], y[keep]
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


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

    def rz(a: np.ndarray) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        z, o = np.zeros_like(a), np.ones_like(a)
        rows = [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)]
        return np.stack(rows, -2)

    def ry(a: np.ndarray) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        z, o = np.zeros_like(a), np.ones_like(a)
        rows = [np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)]
        return np.stack(rows, -2)

    return rz(ph) @ ry(th) @ rz(ps)


def _increment(omega: torch.Tensor) -> torch.Tensor:
    """Rotation of the normalised quaternion ``(1, omega / 2)``: ``~exp(omega)``, smooth at 0."""
    q = torch.cat([torch.ones(1, dtype=omega.dtype), 0.5 * omega])
    w, x, y, z = q / torch.linalg.vector_norm(q)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def _project_so3(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


@dataclass
class AlignmentInfo:
    """Result of :func:`align_maps` (see the module doc for the transform's meaning).

    Attributes:
        rotation: ``(3, 3)`` rotation ``R`` applied to (the possibly flipped) ``moving``.
        shift_A: ``(3,)`` translation ``t`` ``(x, y, z)`` in Å applied after the rotation.
        flipped: whether ``moving`` was hand-flipped first.
        correlation: Pearson correlation of ``ref`` and the aligned map over the whole box.
        correlation_masked: the same inside the sphere of radius ``D / 2``.
        coarse_correlation: best score of the grid search (low-passed, cropped maps).
        n_rotations_searched: rotations scored in the grid search (both hands counted).
        seconds: wall time.
        pixel_size_A: pixel size used to express ``shift_A``.
    """

    rotation: np.ndarray
    shift_A: np.ndarray
    flipped: bool
    correlation: float
    correlation_masked: float
    coarse_correlation: float
    n_rotations_searched: int
    seconds: float
    pixel_size_A: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        return {
            "rotation": np.asarray(self.rotation).tolist(),
            "shift_A": np.asarray(self.shift_A).tolist(),
            "flipped": bool(self.flipped),
            "correlation": float(self.correlation),
            "correlation_masked": float(self.correlation_masked),
            "coarse_correlation": float(self.coarse_correlation),
            "n_rotations_searched": int(self.n_rotations_searched),
            "seconds": float(self.seconds),
            "pixel_size_A": float(self.pixel_size_A),
        }


def apply_alignment(vol: Any, info: AlignmentInfo, pixel_size_A: float | None = None) -> np.ndarray:
    """Apply an :func:`align_maps` result to another map on the same grid (e.g. a half-map or mask).

    ``pixel_size_A`` defaults to ``info.pixel_size_A`` (it converts ``shift_A`` to voxels).
    Samples from outside the box read the map's :func:`background_level`.
    """
    apix = info.pixel_size_A if pixel_size_A is None else pixel_size_A
    shift = np.asarray(info.shift_A) / apix
    return rotate_map(vol, info.rotation, shift, flip=info.flipped, fill=background_level(vol))


class _Level:
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
        r = lowpass_gaussian(_crop(ref - background_level(ref), self.box), sigma_frac * 0.5)
        m = lowpass_gaussian(_crop(mov - background_level(mov), self.box), sigma_frac * 0.5)
        self.ref_np = r
        self.mov_np = m
        self.mov = torch.as_tensor(m, dtype=dtype)
        self.pts = _grid_points(self.box, radius=self.box / 2 - 1).to(dtype)
        vals = _sample(torch.as_tensor(r, dtype=dtype), self.pts)
        vals = vals - vals.mean()
        self.ref_vals = vals / torch.linalg.vector_norm(vals).clamp_min(1e-30)
        self.com_ref = _centre_of_mass(r)
        self.com_mov = _centre_of_mass(m)

    def score(self, rot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Correlation for rotations ``(B, 3, 3)`` and translations ``(B, 3)`` (level voxels)."""
        src = (self.pts[None] - t[:, None, :].to(self.dtype)) @ rot.to(self.dtype)
        v = _sample(self.mov, src)
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
        cc = np.fft.ifftn(np.fft.fftn(self.ref_np) * np.conj(np.fft.fftn(moved))).real
        peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
        peak = np.where(peak > self.box // 2, peak - self.box, peak)  # wrap to signed
        return t + peak[::-1]  # (z, y, x) -> (x, y, z)

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
            r = _project_so3((_increment(torch.as_tensor(x[:3] / lever)) @ r0).numpy())
        t_new = np.asarray(x[3:], dtype=np.float64)
        return r, t_new, self.score_np(r, t_new)


def _centre_of_mass(vol: np.ndarray) -> np.ndarray:
    """Centre of mass ``(x, y, z)`` (voxels from the centre) of the density above the background.

    The background is the median outside the inscribed sphere; negative parts are ignored.
    """
    d = vol.shape[0]
    pts = _grid_points(d).numpy()
    r2 = (pts * pts).sum(-1)
    flat = vol.reshape(-1)
    outside = r2 > (d / 2) ** 2
    bg = float(np.median(flat[outside])) if outside.any() else 0.0
    w = np.clip(flat - bg, 0.0, None)
    if w.sum() <= 0:
        return np.zeros(3)
    return (pts * w[:, None]).sum(0) / w.sum()


def align_maps(
    ref: Any,
    moving: Any,
    pixel_size_A: float,
    *,
    hands: str = "both",
    search_box: int = 16,
    mid_box: int = 24,
    refine_box: int = 48,
    n_directions: int = 192,
    n_inplane: int = 24,
    top_k: int = 3,
    lowpass_A: float | None = None,
    batch: int = 256,
) -> tuple[np.ndarray, AlignmentInfo]:
    """Align ``moving`` onto ``ref``; returns ``(aligned, info)`` (see module doc).

    Args:
        ref: reference map ``(D, D, D)``, ``[z, y, x]``, numpy or torch.
        moving: map to align, same shape.
        pixel_size_A: pixel size of both maps (converts the translation to Å, and ``lowpass_A``).
        hands: ``"both"`` (also try the mirror), ``"same"`` or ``"flipped"``.
        search_box: box of the global grid search (Fourier crop).
        mid_box: box on which the ``top_k`` grid candidates are refined.
        refine_box: box of the final refinement of the best candidate.
        n_directions: viewing directions of the search grid (:func:`hopf_grid`).
        n_inplane: in-plane angles of the search grid.
        top_k: grid candidates per hand (at least 30 degrees apart) refined locally.
        lowpass_A: optional extra Gaussian low-pass (Å) of the maps used for scoring.
        batch: rotations per ``grid_sample`` call in the search.

    Returns:
        ``aligned`` (float32 numpy, the full-size unfiltered ``moving`` transformed) and
        :class:`AlignmentInfo`.

    Raises:
        ValueError: the maps are not cubic or differ in shape, or ``hands`` is unknown.
    """
    t_start = time.perf_counter()
    ref_np = np.asarray(_to_numpy(ref), dtype=np.float64)
    mov_np = np.asarray(_to_numpy(moving), dtype=np.float64)
    if ref_np.shape != mov_np.shape:
        raise ValueError(f"maps differ in shape: {ref_np.shape} vs {mov_np.shape}")
    if hands not in ("both", "same", "flipped"):
        raise ValueError(f"hands must be 'both', 'same' or 'flipped', got {hands!r}")
    d = ref_np.shape[0]
    grid = torch.as_tensor(hopf_grid(n_directions, n_inplane), dtype=torch.float32)

    def sigma_frac(box: int, default: float) -> float:
        # Gaussian width as a fraction of the level's Nyquist (0.5 cycles/voxel).
        frac = default
        if lowpass_A is not None:
            apix_level = pixel_size_A * d / min(box, d)
            frac = min(frac, 2.0 * apix_level / lowpass_A)
        return frac

    options = {"both": (False, True), "same": (False,), "flipped": (True,)}[hands]
    moved = {f: (flip_hand(mov_np) if f else mov_np) for f in options}
    candidates: list[tuple[float, bool, np.ndarray, np.ndarray]] = []
    coarse_best = -np.inf
    for flipped in options:
        lvl = _Level(ref_np, moved[flipped], search_box, sigma_frac(search_box, 0.5), torch.float32)
        c_r = torch.as_tensor(lvl.com_ref, dtype=torch.float32)
        c_m = torch.as_tensor(lvl.com_mov, dtype=torch.float32)
        scores = []
        with torch.no_grad():
            for i in range(0, grid.shape[0], batch):
                rot_b = grid[i : i + batch]
                t_b = c_r[None] - rot_b @ c_m  # maps moving's centre of mass onto ref's
                scores.append(lvl.score(rot_b, t_b))
        s = torch.cat(scores).numpy()
        coarse_best = max(coarse_best, float(s.max()))
        chosen: list[np.ndarray] = []
        for idx in np.argsort(-s):
            rot = grid[idx].numpy().astype(np.float64)
            if any(_angle_deg(rot, c) < 30.0 for c in chosen):
                continue
            chosen.append(rot)
            t0 = (lvl.com_ref - rot @ lvl.com_mov) * lvl.scale  # in full-size voxels
            candidates.append((float(s[idx]), flipped, rot, t0))
            if len(chosen) >= top_k:
                break
    candidates.sort(key=lambda c: -c[0])
    timings = {"search": time.perf_counter() - t_start}

    mids = {f: _Level(ref_np, moved[f], mid_box, sigma_frac(mid_box, 0.5)) for f in options}
    refined: list[tuple[float, bool, np.ndarray, np.ndarray]] = []
    for _, flipped, rot, t_full in candidates:
        lvl = mids[flipped]
        t0 = t_full / lvl.scale
        t1 = lvl.shift_search(rot, t0)
        t_init = t1 if lvl.score_np(rot, t1) > lvl.score_np(rot, t0) else t0
        r, t, c = lvl.refine(rot, t_init, iters=20)
        refined.append((c, flipped, r, t * lvl.scale))
    refined.sort(key=lambda c: -c[0])
    _, flipped, rot, t_full = refined[0]
    timings["candidates"] = time.perf_counter() - t_start - sum(timings.values())

    fine = _Level(ref_np, moved[flipped], refine_box, sigma_frac(refine_box, 0.6))
    rot, t_fine, _ = fine.refine(rot, t_full / fine.scale, iters=25)
    t_full = t_fine * fine.scale
    timings["refine"] = time.perf_counter() - t_start - sum(timings.values())

    fill = background_level(mov_np)
    aligned = rotate_map(mov_np, rot, t_full, flip=flipped, fill=fill).astype(np.float32)
    sphere = (_grid_points(d).numpy() ** 2).sum(-1).reshape(d, d, d) <= (d / 2) ** 2
    info = AlignmentInfo(
        rotation=rot,
        shift_A=t_full * pixel_size_A,
        flipped=bool(flipped),
        correlation=real_space_correlation(ref_np, aligned),
        correlation_masked=real_space_correlation(ref_np, aligned, sphere),
        coarse_correlation=coarse_best,
        n_rotations_searched=int(grid.shape[0] * len(options)),
        seconds=time.perf_counter() - t_start,
        pixel_size_A=float(pixel_size_A),
        extra={"timings_s": timings, "candidates": [(c[0], c[1]) for c in refined]},
    )
    return aligned, info


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = 0.5 * (float(np.trace(a.T @ b)) - 1.0)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))
