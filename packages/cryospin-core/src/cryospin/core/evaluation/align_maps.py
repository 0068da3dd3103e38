"""Rigid alignment of two 3D maps: global rotation search over SO(3) and the hand, then refinement.

Conventions
-----------
* Maps are cubic ``(D, D, D)`` arrays indexed ``[z, y, x]`` (MRC order). Coordinates are in voxels,
  ordered ``(x, y, z)``, relative to the centre voxel ``D // 2`` (RELION's centre,
  docs/CONVENTIONS.md item 3), for even and odd ``D``.
* :func:`rotate_map` ``(vol, R, t)`` returns ``out(x) = vol(R^T (x - t))``: the map content is
  rotated by ``R`` about the centre, then translated by ``t``. A feature at ``y`` moves to
  ``R y + t``. Sampling is trilinear (``torch.nn.functional.grid_sample``,
  ``align_corners=True`` with index ``i`` at normalised coordinate ``2 i / (D - 1) - 1``, so the
  centre stays exactly on the centre voxel; the grid's last dimension is ``(x, y, z)``,
  docs/CONVENTIONS.md item 4); points outside the box read ``fill`` (default 0).
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

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from cryospin.core.evaluation.align_search import Level, hopf_grid, sphere_directions
from cryospin.core.evaluation.map_ops import (
    background_level,
    flip_hand,
    lowpass_gaussian,
    map_pair,
    radius_sq,
    real_space_correlation,
    rotate_map,
)
from cryospin.core.evaluation.pose_error import geodesic_deg

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


#: A candidate alignment: (score, flipped, rotation (3, 3), shift (3,) in full-size voxels).
_Candidate = tuple[float, bool, np.ndarray, np.ndarray]


def _sigma_frac(
    box: int, default: float, *, d: int, pixel_size_A: float, lowpass_A: float | None
) -> float:
    """Gaussian width of a level of size ``box`` as a fraction of its Nyquist (0.5 cycles/voxel).

    ``default``, narrowed to ``lowpass_A`` (Å) when given.
    """
    frac = default
    if lowpass_A is not None:
        apix_level = pixel_size_A * d / min(box, d)
        frac = min(frac, 2.0 * apix_level / lowpass_A)
    return frac


def _grid_candidates(
    lvl: Level, grid: torch.Tensor, flipped: bool, top_k: int, batch: int
) -> tuple[list[_Candidate], float]:
    """Score every grid rotation (translation: centre of mass onto centre of mass) on ``lvl``.

    Returns the ``top_k`` best candidates at least 30 degrees apart and the best score.
    """
    c_r = torch.as_tensor(lvl.com_ref, dtype=torch.float32)
    c_m = torch.as_tensor(lvl.com_mov, dtype=torch.float32)
    scores = []
    with torch.no_grad():
        for i in range(0, grid.shape[0], batch):
            rot_b = grid[i : i + batch]
            t_b = c_r[None] - rot_b @ c_m  # maps moving's centre of mass onto ref's
            scores.append(lvl.score(rot_b, t_b))
    s = torch.cat(scores).numpy()
    chosen: list[np.ndarray] = []
    found: list[_Candidate] = []
    for idx in np.argsort(-s):
        rot = grid[idx].numpy().astype(np.float64)
        if any(geodesic_deg(rot, c) < 30.0 for c in chosen):
            continue
        chosen.append(rot)
        t0 = (lvl.com_ref - rot @ lvl.com_mov) * lvl.scale  # in full-size voxels
        found.append((float(s[idx]), flipped, rot, t0))
        if len(chosen) >= top_k:
            break
    return found, float(s.max())


def _refine_candidate(lvl: Level, candidate: _Candidate) -> _Candidate:
    """FFT translation search, then L-BFGS refinement of one candidate on ``lvl``."""
    _, flipped, rot, t_full = candidate
    t0 = t_full / lvl.scale
    t1 = lvl.shift_search(rot, t0)
    t_init = t1 if lvl.score_np(rot, t1) > lvl.score_np(rot, t0) else t0
    r, t, c = lvl.refine(rot, t_init, iters=20)
    return (c, flipped, r, t * lvl.scale)


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
    ref_np, mov_np = map_pair(ref, moving)
    if hands not in ("both", "same", "flipped"):
        raise ValueError(f"hands must be 'both', 'same' or 'flipped', got {hands!r}")
    d = ref_np.shape[0]
    grid = torch.as_tensor(hopf_grid(n_directions, n_inplane), dtype=torch.float32)

    sigma = partial(_sigma_frac, d=d, pixel_size_A=pixel_size_A, lowpass_A=lowpass_A)
    options = {"both": (False, True), "same": (False,), "flipped": (True,)}[hands]
    moved = {f: (flip_hand(mov_np) if f else mov_np) for f in options}
    candidates: list[_Candidate] = []
    coarse_best = -np.inf
    for flipped in options:
        lvl = Level(ref_np, moved[flipped], search_box, sigma(search_box, 0.5), torch.float32)
        found, best = _grid_candidates(lvl, grid, flipped, top_k, batch)
        candidates += found
        coarse_best = max(coarse_best, best)
    candidates.sort(key=lambda c: -c[0])
    timings = {"search": time.perf_counter() - t_start}

    mids = {f: Level(ref_np, moved[f], mid_box, sigma(mid_box, 0.5)) for f in options}
    refined = sorted((_refine_candidate(mids[c[1]], c) for c in candidates), key=lambda c: -c[0])
    _, flipped, rot, t_full = refined[0]
    timings["candidates"] = time.perf_counter() - t_start - sum(timings.values())

    fine = Level(ref_np, moved[flipped], refine_box, sigma(refine_box, 0.6))
    rot, t_fine, _ = fine.refine(rot, t_full / fine.scale, iters=25)
    t_full = t_fine * fine.scale
    timings["refine"] = time.perf_counter() - t_start - sum(timings.values())

    fill = background_level(mov_np)
    aligned = rotate_map(mov_np, rot, t_full, flip=flipped, fill=fill).astype(np.float32)
    sphere = radius_sq(d) <= (d / 2) ** 2
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
