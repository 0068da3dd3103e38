"""Plots of a run: FSC curves, the orientation distribution on a HEALPix grid, head usage.

Every figure is drawn on a matplotlib ``Figure`` with the Agg canvas (no pyplot, no global
backend switch, safe in threads and headless machines) and saved atomically
(:func:`cryospin.core.evaluation.outputs.atomic_path`) as PNG.

Viewing direction: under the RELION ``A`` convention (map -> image coordinates, projection along
image ``z``), the direction along which a particle's image integrates the map is, in map
coordinates, ``A^T e_z``: the third **row** of ``A``
(:func:`cryospin.core.evaluation.pose_error.viewing_directions`). Those unit vectors are binned
with ``healpy.vec2pix(nside, x, y, z)`` (RING ordering) and shown in a Mollweide projection
(``healpy.projector.MollweideProj``), with longitude ``atan2(y, x)`` and colatitude ``acos(z)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cryospin.core.evaluation.outputs import atomic_path
from cryospin.core.evaluation.pose_error import viewing_directions

__all__ = [
    "orientation_counts",
    "plot_fsc",
    "plot_head_usage",
    "plot_orientations",
]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str], dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _crossing(freq: np.ndarray, curve: np.ndarray, threshold: float) -> float | None:
    """Frequency (1/Å) of the first drop below ``threshold`` from shell 1 (interpolated)."""
    below = np.nonzero(curve[1:] < threshold)[0]
    if below.size == 0:
        return None
    i = int(below[0]) + 1
    c0, c1 = float(curve[i - 1]), float(curve[i])
    t = 1.0 if c0 == c1 else min(max((c0 - threshold) / (c0 - c1), 0.0), 1.0)
    return float(freq[i - 1] + t * (freq[i] - freq[i - 1]))


def plot_fsc(
    curves: Mapping[str, Sequence[Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    thresholds: Sequence[float] | None = None,
    dpi: int = 120,
) -> None:
    """Draw FSC curves with their thresholds and save a PNG at ``path``.

    Args:
        curves: ``{label: (frequency_per_A, fsc)}`` or ``{label: (frequency_per_A, fsc,
            threshold)}``; with a threshold the crossing resolution is added to the label and
            marked on the curve. (``FSCResult.curves()`` has this form.)
        path: destination PNG.
        title: figure title.
        thresholds: horizontal lines to draw and label; default: every curve's threshold, or
            0.143 and 0.5 when none is given.
        dpi: resolution of the PNG.

    With no curve, an empty plot that says so is written (a run without reference still gets
    the file).
    """
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    seen: list[float] = []
    for label, spec in curves.items():
        freq = np.asarray(spec[0], dtype=np.float64)
        fsc = np.asarray(spec[1], dtype=np.float64)
        thr = float(spec[2]) if len(spec) > 2 and spec[2] is not None else None
        text = label
        if thr is not None:
            seen.append(thr)
            f = _crossing(freq, fsc, thr)
            if f is not None and f > 0:
                text = f"{label}: {1.0 / f:.2f} Å @ {thr:g}"
        (line,) = ax.plot(freq, fsc, lw=1.5, label=text)
        if thr is not None:
            f = _crossing(freq, fsc, thr)
            if f is not None:
                ax.plot([f], [thr], "o", ms=4, color=line.get_color())
    lines = list(thresholds) if thresholds is not None else sorted(set(seen)) or [0.143, 0.5]
    for thr in lines:
        ax.axhline(thr, ls="--", lw=0.8, color="grey")
        ax.text(
            1.0,
            thr,
            f" {thr:g}",
            transform=ax.get_yaxis_transform(),
            va="center",
            ha="left",
            fontsize=8,
            color="grey",
        )
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlim(left=0.0)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="upper right")
        fmax = max(float(np.max(np.asarray(s[0]))) for s in curves.values())
        if fmax > 0:
            ticks = [t for t in np.linspace(0, fmax, 6)[1:]]
            top = ax.secondary_xaxis("top")
            top.set_xticks(ticks)
            top.set_xticklabels([f"{1.0 / t:.1f}" for t in ticks])
            top.set_xlabel("resolution (Å)")
    else:
        ax.text(
            0.5,
            0.5,
            "no FSC: no truth map and no half-maps",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, dpi)


def orientation_counts(rotations: Any, nside: int = 8) -> np.ndarray:
    """Particles per HEALPix pixel (RING, ``12 nside^2`` pixels) of their viewing directions.

    The viewing direction of pose ``A`` is its third row (see the module doc). The counts sum to
    the number of poses.
    """
    import healpy

    v = viewing_directions(rotations)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    pix = healpy.vec2pix(nside, v[:, 0], v[:, 1], v[:, 2])
    return np.bincount(pix, minlength=healpy.nside2npix(nside)).astype(np.int64)


def plot_orientations(
    rotations: Any,
    path: str | os.PathLike[str],
    *,
    nside: int = 8,
    title: str | None = None,
    dpi: int = 120,
) -> np.ndarray:
    """Mollweide map of the viewing-direction counts per HEALPix pixel, saved as PNG.

    Returns the counts (:func:`orientation_counts`).
    """
    import healpy
    from healpy.projector import MollweideProj

    counts = orientation_counts(rotations, nside)
    proj = MollweideProj(xsize=800)
    image = proj.projmap(counts.astype(np.float64), lambda x, y, z: healpy.vec2pix(nside, x, y, z))
    image = np.ma.masked_invalid(np.where(np.isinf(image), np.nan, image))
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    xmin, xmax, ymin, ymax = proj.get_extent()
    im = ax.imshow(
        image,
        origin="lower",
        extent=(xmin, xmax, ymin, ymax),
        cmap="viridis",
        interpolation="nearest",
    )
    ax.set_axis_off()
    cb = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
    cb.set_label("particles per pixel")
    n = int(counts.sum())
    fig.suptitle(
        title
        or f"viewing directions, {n} particles (HEALPix nside {nside}, "
        f"{counts.size} pixels, Mollweide)",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path, dpi)
    return counts


def plot_head_usage(
    usage: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 120,
) -> np.ndarray:
    """Bar plot of how often each encoder head won, saved as PNG; returns the plotted values.

    ``usage`` is ``(M,)`` counts per head (an integer array; the y axis reads "particles") or
    shares (floats summing to 1; the axis reads "share of particles (%)"); float values that do
    not sum to 1 are plotted as counts. A sequence of per-particle
    winning head indices can be turned into counts with ``np.bincount(winners, minlength=M)``.
    """
    raw = np.asarray(_np(usage))
    values = raw.astype(np.float64).reshape(-1)
    is_share = (
        bool(values.size)
        and not np.issubdtype(raw.dtype, np.integer)
        and math.isclose(float(values.sum()), 1.0, rel_tol=1e-6)
    )
    fig = _figure(max(4.0, 0.5 * values.size + 2.0), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    heights = values * 100 if is_share else values
    ax.bar(np.arange(values.size), heights, color="tab:blue")
    ax.set_xticks(np.arange(values.size))
    ax.set_xlabel("encoder head")
    ax.set_ylabel("share of particles (%)" if is_share else "particles")
    total = "" if is_share else f", {int(values.sum())} particles"
    ax.set_title(title or f"winning head per particle{total}", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi)
    return values


def _np(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x
