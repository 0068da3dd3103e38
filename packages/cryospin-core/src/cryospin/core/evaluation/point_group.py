"""Point group (Cn, Dn) of a truth map, found from its self-correlation, and errors modulo it.

Conventions
-----------
Maps are ``(D, D, D)`` ``[z, y, x]`` with coordinates ``(x, y, z)`` in voxels from the centre
voxel ``D // 2`` (:mod:`cryospin.core.evaluation.map_ops`). A rotation ``g`` is a **symmetry** of
``V`` when ``V(g x) = V(x)`` for all ``x``, i.e. ``rotate_map(V, g) == V``. A group contains
``g^T`` with ``g``, so ``V(g^T x) = V(x)`` too.

Poses are RELION's ``A`` ``(N, 3, 3)`` (map to image coordinates; the image projects
``V(A^T p)`` along ``p_z``; :mod:`cryospin.core.evaluation.pose_error`). A map rotated as
``V'(x) = V(g x)`` gives at pose ``A g`` the image ``V`` gives at ``A``; for a symmetry ``V' = V``,
so **the group acts on the right**: a particle with true pose ``A`` has the equally valid poses
``A g``, ``g`` in ``G`` (checked against projections in
``tests/core/test_evaluation_point_group.py``).

Detection (:func:`detect_point_group`): on the map Fourier-cropped to ``search_box`` voxels, the
correlation of the map with itself rotated by ``360/n`` degrees about each axis of a
near-uniform grid on the half-sphere is computed for ``n = 2 .. max_order``; the best axes are
refined (Nelder-Mead over the axis direction, angle fixed) and an ``n``-fold axis is accepted when
the map cropped to ``judge_box`` voxels correlates at least ``min_correlation`` with itself under
**every** rotation of the cyclic group it generates. Correlations are taken over the inscribed
sphere after removing the spherical average (:func:`without_radial_profile`), which any rotation
about the centre leaves unchanged and which would otherwise make every globular map look
symmetric. Every accepted axis gives ``C_n``, and ``D_n`` when a 2-fold perpendicular to it
(searched on the great circle) passes too; the largest of these groups whose correlation is within
0.02 of the best one's is reported (a D7 map passes as C2, C7 and D7; a sparse C2 map may pass a
pseudo 3-fold, far less well). Groups are built exactly from the refined axes
(:func:`cyclic_group`, :func:`dihedral_group`), closed by construction, and validated element by
element. T, O and I are not searched.
The fixed judging sampling matters: a pseudo-symmetric complex is symmetric at low resolution
only, and its self-correlation falls with finer sampling (PDB 2CG9 under its C2: 0.937 at 6 Å
per voxel, 0.833 at 3 Å, whole-box Pearson correlation).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cryospin.core.evaluation.map_ops import as_map, crop, grid_points, radius_sq, sample

__all__ = [
    "PointGroup",
    "axis_rotation",
    "cyclic_group",
    "detect_point_group",
    "detect_point_group_cached",
    "dihedral_group",
    "pose_errors_modulo_group",
    "without_radial_profile",
]


def axis_rotation(axis: Any, angle_rad: float) -> np.ndarray:
    """Return the rotation ``(3, 3)`` by ``angle_rad`` about ``axis`` ``(x, y, z)`` (Rodrigues).

    Acts on column vectors; right-handed (counter-clockwise looking down the axis).
    """
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


def cyclic_group(axis: Any, order: int) -> np.ndarray:
    """Return the ``order`` rotations ``(order, 3, 3)`` by ``360 k / order`` deg about ``axis``.

    Identity first.
    """
    return np.stack([axis_rotation(axis, 2 * math.pi * k / order) for k in range(order)])


def dihedral_group(axis: Any, order: int, two_fold: Any) -> np.ndarray:
    """Return the ``2 order`` rotations ``(2 order, 3, 3)`` of the dihedral group ``D_order``.

    ``C_order`` about ``axis``, then the 2-folds about ``two_fold`` (made exactly perpendicular to
    ``axis``) turned by ``180 k / order`` degrees about ``axis``. Identity first.

    Raises:
        ValueError: ``two_fold`` is (nearly) parallel to ``axis``.
    """
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    v = np.asarray(two_fold, dtype=np.float64)
    v = v - (v @ u) * u
    if np.linalg.norm(v) < 1e-6:
        raise ValueError("the 2-fold axis of a dihedral group must not be parallel to its axis")
    cyc = cyclic_group(u, order)
    flips = [axis_rotation(r @ v, math.pi) for r in cyclic_group(u, 2 * order)[:order]]
    return np.concatenate([cyc, np.stack(flips)])


@dataclass(frozen=True)
class PointGroup:
    """A finite rotation group found in a map (see the module doc for conventions).

    Attributes:
        name: ``"C1"``, ``"C<n>"`` or ``"D<n>"``.
        operators: ``(|G|, 3, 3)`` float64 rotations ``g`` with ``V(g x) = V(x)``, identity first.
        axis: principal axis ``(x, y, z)`` (unit), ``None`` for C1.
        two_fold: a perpendicular 2-fold axis for D groups, else ``None``.
        correlation: the smallest self-correlation of the (judging-cropped) map over the
            non-identity operators (``None`` for C1).
        candidates: ``[(order, axis, correlation), ...]`` every axis that was judged (report).
    """

    name: str
    operators: np.ndarray
    axis: np.ndarray | None = None
    two_fold: np.ndarray | None = None
    correlation: float | None = None
    candidates: list[tuple[int, list[float], float]] = field(default_factory=list)

    @property
    def order(self) -> int:
        """Number of elements ``|G|``."""
        return int(self.operators.shape[0])

    @classmethod
    def trivial(cls) -> PointGroup:
        """Return the group C1 (identity only)."""
        return cls("C1", np.eye(3)[None].copy())


def pose_errors_modulo_group(r_est: Any, r_true: Any, group: PointGroup | Any) -> np.ndarray:
    """Per-particle rotation error modulo ``G``: ``min_g angle(R_est, R_true g)``, degrees ``(N,)``.

    Args:
        r_est: ``(N, 3, 3)`` estimated poses (RELION ``A``) **already in the truth's frame and
            hand** (e.g. ``apply_pose_alignment`` of a global alignment).
        r_true: ``(N, 3, 3)`` true poses.
        group: a :class:`PointGroup` or an ``(M, 3, 3)`` array of symmetry operators ``g`` of the
            truth map (``V(g x) = V(x)``); the group acts on the right of ``A``.

    Returns:
        float64 ``(N,)`` in ``[0, 180]``.
    """
    ops = np.asarray(getattr(group, "operators", group), dtype=np.float64)
    est = np.asarray(r_est, dtype=np.float64).reshape(-1, 3, 3)
    tru = np.asarray(r_true, dtype=np.float64).reshape(-1, 3, 3)
    # angle(E, T g): trace(E^T T g) = <T^T E, g> (Frobenius)
    m = np.swapaxes(tru, -1, -2) @ est
    traces = np.einsum("nab,gab->ng", m, ops)
    best = np.clip(0.5 * (traces.max(axis=1) - 1.0), -1.0, 1.0)
    return np.degrees(np.arccos(best))


def _half_sphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors with ``z >= 0`` (Fibonacci lattice on the half-sphere)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    rho = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)


def without_radial_profile(vol: np.ndarray) -> np.ndarray:
    """Return ``vol`` minus its spherical average about the centre voxel ``D // 2``.

    The spherical average (linear interpolation between integer-radius shells) is invariant under
    every rotation about the centre, so it would make any globular map look symmetric, the more so
    the smaller the molecule sits in the box; what remains is the anisotropic part.
    """
    d = vol.shape[0]
    r = np.sqrt(radius_sq(d).astype(np.float64))
    lo = np.floor(r).astype(np.int64)
    frac = r - lo
    n_bins = int(lo.max()) + 2
    weight = np.bincount(lo.ravel(), (1 - frac).ravel(), n_bins)
    weight += np.bincount(lo.ravel() + 1, frac.ravel(), n_bins)
    total = np.bincount(lo.ravel(), ((1 - frac) * vol).ravel(), n_bins)
    total += np.bincount(lo.ravel() + 1, (frac * vol).ravel(), n_bins)
    profile = total / np.maximum(weight, 1e-12)
    return vol - ((1 - frac) * profile[lo] + frac * profile[lo + 1])


class _SelfCorrelation:
    """Pearson correlation of a map's anisotropic part with itself rotated (batched).

    Over the inscribed sphere, after :func:`without_radial_profile`.
    """

    def __init__(self, vol: np.ndarray) -> None:
        d = vol.shape[0]
        vol = without_radial_profile(np.asarray(vol, dtype=np.float64))
        self.vol = torch.as_tensor(np.ascontiguousarray(vol))
        self.pts = grid_points(d, radius=(d - 1) / 2.0)
        ref = sample(self.vol, self.pts)
        self.ref = (ref - ref.mean()) / ref.std()

    def __call__(self, rotations: np.ndarray) -> np.ndarray:
        rots = torch.as_tensor(np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3))
        out = []
        for chunk in torch.split(rots, 256):
            src = torch.einsum("pj,rjk->rpk", self.pts, chunk)  # row form of g^T x
            vals = sample(self.vol, src)
            vals = vals - vals.mean(-1, keepdim=True)
            den = vals.norm(dim=-1) * self.ref.norm()
            out.append((vals @ self.ref) / den.clamp_min(1e-30))
        return torch.cat(out).numpy()


def _refine_axis(score: _SelfCorrelation, axis: np.ndarray, angle: float) -> np.ndarray:
    """Axis near ``axis`` maximising the self-correlation under rotation by ``angle``."""
    from scipy.optimize import minimize

    a = axis / np.linalg.norm(axis)
    # tangent basis at a
    t1 = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(a, t1)

    def direction(p: np.ndarray) -> np.ndarray:
        v = a + p[0] * t1 + p[1] * t2
        return v / np.linalg.norm(v)

    def cost(p: np.ndarray) -> float:
        return -float(score(axis_rotation(direction(p), angle)[None])[0])

    step = math.radians(4.0)
    res = minimize(
        cost,
        np.zeros(2),
        method="Nelder-Mead",
        options={"initial_simplex": step * np.array([[0, 0], [1, 0], [0, 1.0]]), "xatol": 1e-3},
    )
    return direction(res.x)


def _distinct_best(axes: np.ndarray, values: np.ndarray, k: int, sep_deg: float) -> list[int]:
    """Return the indices of the ``k`` best axes (sign-free) at least ``sep_deg`` apart."""
    chosen: list[int] = []
    cos_sep = math.cos(math.radians(sep_deg))
    for i in np.argsort(-values):
        if all(abs(axes[i] @ axes[j]) < cos_sep for j in chosen):
            chosen.append(int(i))
        if len(chosen) == k:
            break
    return chosen


def _validated(judge: _SelfCorrelation, ops: np.ndarray) -> float:
    """Smallest self-correlation over the non-identity operators."""
    return float(judge(ops[1:]).min()) if len(ops) > 1 else 1.0


def detect_point_group(
    truth_map: Any,
    pixel_size_A: float | None = None,
    *,
    max_order: int = 8,
    min_correlation: float = 0.75,
    search_box: int = 16,
    judge_box: int = 32,
    n_axes: int = 600,
    per_order: int = 2,
    margin: float = 0.1,
) -> PointGroup:
    """Find the point group (C1, Cn, Dn with ``n <= max_order``) of a truth map.

    See the module doc for the algorithm. Pseudo-symmetry counts: the threshold is on the
    correlation of the anisotropic part (:func:`without_radial_profile`) of the map
    Fourier-cropped to ``judge_box`` voxels. Measured on ``cryospin simulate`` truth maps at box
    64 with the molecule spanning about 0.7 of the box: HSP90 2CG9 (C2 homodimer) 0.90, spike 6VYB
    (one RBD up, pseudo-C3) 0.80, CFTR 6MSM (one chain, homologous halves) 0.67 under its best
    2-fold, the 80S ribosome map < 0.5; exact Cn/Dn maps 0.99. A molecule small in its box is
    judged more coarsely and looks more symmetric (CFTR spanning 0.35 of the box: 0.85, C2).

    Args:
        truth_map: ``(D, D, D)`` map ``[z, y, x]``, centred on voxel ``D // 2``.
        pixel_size_A: voxel size in Å (informational; the judging sampling is ``judge_box``).
        max_order: largest ``n`` tried for ``Cn``/``Dn``.
        min_correlation: smallest self-correlation of the judged map under every operator.
        search_box: side of the map for the axis search.
        judge_box: side of the map on which operators are accepted.
        n_axes: axes of the half-sphere grid (600: about 6 degrees apart).
        per_order: best distinct axes refined per order.
        margin: a dihedral group must stay within ``margin`` of the correlation of its cyclic
            subgroup. Of all accepted groups, the largest whose correlation is within 0.02 of
            the best one's is returned.

    Returns:
        A :class:`PointGroup` (``C1`` when nothing passes).

    Raises:
        ValueError: the map is not a cubic 3D array.
    """
    del pixel_size_A  # the judging sampling is fixed in voxels (module doc)
    full = np.asarray(as_map(truth_map), dtype=np.float64)
    search = _SelfCorrelation(crop(full, search_box))
    judge = _SelfCorrelation(crop(full, judge_box))
    axes = _half_sphere(n_axes)
    accepted: list[tuple[int, np.ndarray, float]] = []
    candidates: list[tuple[int, list[float], float]] = []
    for n in range(2, max_order + 1):
        angle = 2 * math.pi / n
        coarse = search(np.stack([axis_rotation(a, angle) for a in axes]))
        for i in _distinct_best(axes, coarse, per_order, 20.0):
            if coarse[i] < min_correlation - 0.3:
                break
            axis = _refine_axis(search, axes[i], angle)
            corr = _validated(judge, cyclic_group(axis, n))
            candidates.append((n, axis.tolist(), corr))
            if corr >= min_correlation:
                accepted.append((n, axis, corr))
    if not accepted:
        return PointGroup("C1", np.eye(3)[None].copy(), candidates=candidates)
    groups: list[PointGroup] = []
    for n, axis, corr in _distinct_axes(accepted):
        groups.append(PointGroup(f"C{n}", cyclic_group(axis, n), axis, None, corr))
        found = _dihedral(groups[-1], search, judge, max(min_correlation, corr - margin))
        if found is not None:
            candidates.append(found[1])
            groups.extend([] if found[0] is None else [found[0]])
    pick = _largest_convincing(groups)
    return PointGroup(
        pick.name, pick.operators, pick.axis, pick.two_fold, pick.correlation, candidates
    )


def _largest_convincing(groups: list[PointGroup], tie: float = 0.02) -> PointGroup:
    """Return the largest group whose correlation is within ``tie`` of the best group's.

    A D7 map passes as C2 (about each 2-fold), C7 and D7 alike, and may pass an 8-fold less
    well; a sparse C2 map may pass a pseudo 3-fold, far less well.
    """
    top = max(float(g.correlation or 0.0) for g in groups)
    return max(
        (g for g in groups if float(g.correlation or 0.0) >= top - tie),
        key=lambda g: (g.order, g.correlation or 0.0),
    )


def _distinct_axes(
    accepted: list[tuple[int, np.ndarray, float]],
) -> list[tuple[int, np.ndarray, float]]:
    """Drop repeats: the same order about axes under 5 degrees apart (best kept)."""
    out: list[tuple[int, np.ndarray, float]] = []
    for t in sorted(accepted, key=lambda t: -t[2]):
        if all(t[0] != o[0] or abs(t[1] @ o[1]) < math.cos(math.radians(5.0)) for o in out):
            out.append(t)
    return out


def _dihedral(
    group: PointGroup, search: _SelfCorrelation, judge: _SelfCorrelation, min_corr: float
) -> tuple[PointGroup | None, tuple[int, list[float], float]] | None:
    """Return ``(D_n or None, candidate)`` from ``C_n``, or ``None`` when no 2-fold is close.

    The best 2-fold perpendicular to the axis makes ``D_n`` when every operator passes
    ``min_corr``.
    """
    u = np.asarray(group.axis)
    n = group.order
    t1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(u, t1)
    phis = np.radians(np.arange(0.0, 180.0, 2.0))
    perp = np.cos(phis)[:, None] * t1 + np.sin(phis)[:, None] * t2
    coarse = search(np.stack([axis_rotation(v, math.pi) for v in perp]))
    best = int(np.argmax(coarse))
    if coarse[best] < min_corr - 0.3:
        return None
    v = _refine_axis(search, perp[best], math.pi)
    v = v - (v @ u) * u
    v /= np.linalg.norm(v)
    ops = dihedral_group(u, n, v)
    corr = _validated(judge, ops)
    dn = PointGroup(f"D{n}", ops, u, v, corr) if corr >= min_corr else None
    return dn, (2, v.tolist(), corr)


_CACHE: dict[tuple[str, tuple[Any, ...]], PointGroup] = {}


def detect_point_group_cached(truth_map: Any, **kwargs: Any) -> PointGroup:
    """Return :func:`detect_point_group` of the map, remembered per map content and options.

    One truth per run, and the per-epoch metrics ask every epoch. Holds at most 8 groups.
    """
    arr = np.ascontiguousarray(as_map(truth_map), dtype=np.float64)
    key = (hashlib.sha1(arr.tobytes()).hexdigest(), tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = detect_point_group(arr, **kwargs)
    return _CACHE[key]
