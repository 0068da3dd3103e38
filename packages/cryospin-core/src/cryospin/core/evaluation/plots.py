"""Plots of a run: FSC curves, the orientation distribution on a HEALPix grid, head usage.

Every figure is drawn on a matplotlib ``Figure`` with the Agg canvas (no pyplot, no global
backend switch, safe in threads and headless machines) and saved atomically
(:func:`cryospin.core.evaluation.outputs.atomic_path`) as PNG.

Viewing direction: under the RELION ``A`` convention (map -> image coordinates, projection along
image ``z``), the direction along which a particle's image integrates the map is, in map
coordinates, ``A^T e_z``: the third **row** of ``A``
(:func:`cryospin.core.evaluation.pose_error.viewing_directions`). Those unit vectors are binned
with ``healpy.vec2pix(nside, x, y, z)`` (RING ordering) and drawn on matplotlib's Mollweide axes
against azimuth ``atan2(y, x)`` (increasing to the right) and elevation ``asin(z)``, both in
degrees. healpy is an optional dependency (``pip install 'cryospin[plots]'``); without it the
orientation functions raise :class:`~cryospin.core.errors.ConfigError` saying so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cryospin.core.errors import ConfigError
from cryospin.core.evaluation.arrays import as_numpy
from cryospin.core.evaluation.outputs import atomic_path
from cryospin.core.evaluation.pose_error import viewing_directions

__all__ = [
    "orientation_counts",
    "plot_fsc",
    "plot_head_usage",
    "plot_orientations",
    "symmetry_note",
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


def _healpy() -> Any:
    """Import healpy, or raise :class:`ConfigError` naming the extra that installs it."""
    try:
        import healpy
    except ImportError:
        raise ConfigError(
            "the orientation plot needs healpy: pip install 'cryospin[plots]' "
            "(or 'cryospin-core[plots]')"
        ) from None
    return healpy


def symmetry_note(symmetry_deg: float) -> str:
    """One-line note for a self-symmetry rotation of ``symmetry_deg`` degrees of the truth map.

    The order is ``n = round(360 / symmetry_deg)`` (C2 for 180 degrees): ``n`` poses give the same
    image, so a run assigns one of them and only ``1/n`` of the sphere need be populated.
    """
    n = max(2, round(360.0 / float(symmetry_deg)))
    share = "half" if n == 2 else f"{n - 1}/{n}"
    return (
        f"C{n} detected ({float(symmetry_deg):.0f}° self-rotation of the truth map): poses shown "
        f"modulo symmetry; {share} of the sphere may be empty"
    )


def orientation_counts(rotations: Any, nside: int = 8) -> np.ndarray:
    """Particles per HEALPix pixel (RING, ``12 nside^2`` pixels) of their viewing directions.

    The viewing direction of pose ``A`` is its third row (see the module doc). The counts sum to
    the number of poses.

    Raises:
        ConfigError: healpy is not installed.
    """
    healpy = _healpy()

    v = viewing_directions(rotations)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    pix = healpy.vec2pix(nside, v[:, 0], v[:, 1], v[:, 2])
    return np.bincount(pix, minlength=healpy.nside2npix(nside)).astype(np.int64)


def plot_orientations(
    rotations: Any,
    path: str | os.PathLike[str],
    *,
    nside: int = 8,
    symmetry_deg: float | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> np.ndarray:
    """Mollweide map of the viewing-direction counts per HEALPix pixel, saved as PNG.

    Axes: azimuth ``atan2(y, x)`` and elevation ``asin(z)`` of the viewing direction, in degrees
    (module doc). ``symmetry_deg``: the angle of a detected self-symmetry of the truth map
    (``summary.json``'s ``symmetry_deg``); the figure then carries :func:`symmetry_note`.

    Returns:
        The counts (:func:`orientation_counts`).

    Raises:
        ConfigError: healpy is not installed.
    """
    healpy = _healpy()
    counts = orientation_counts(rotations, nside)
    # each cell of a fine azimuth/elevation mesh shows the count of the HEALPix pixel it lies in
    az_edges = np.linspace(-np.pi, np.pi, 361)
    el_edges = np.linspace(-np.pi / 2, np.pi / 2, 181)
    az = 0.5 * (az_edges[1:] + az_edges[:-1])
    el = 0.5 * (el_edges[1:] + el_edges[:-1])
    azz, ell = np.meshgrid(az, el)
    pix = healpy.vec2pix(nside, np.cos(ell) * np.cos(azz), np.cos(ell) * np.sin(azz), np.sin(ell))
    fig = _figure(7.0, 4.6)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.24)
    ax = fig.add_subplot(1, 1, 1, projection="mollweide")
    im = ax.pcolormesh(az_edges, el_edges, counts[pix], cmap="viridis", shading="flat")
    ax.grid(True, color="white", alpha=0.4, linewidth=0.5)
    ax.tick_params(axis="x", colors="white", labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("azimuth atan2(y, x) of the viewing direction (°)", fontsize=8)
    ax.set_ylabel("elevation asin(z) (°)", fontsize=8)
    cax = fig.add_axes((0.3, 0.13, 0.4, 0.025))
    cb = fig.colorbar(im, cax=cax, orientation="horizontal")
    cb.ax.tick_params(labelsize=7)
    cb.set_label("particles per HEALPix pixel", fontsize=8, labelpad=1)
    n = int(counts.sum())
    fig.suptitle(
        title
        or f"viewing directions (third row of A), {n} particles "
        f"(HEALPix nside {nside}, {counts.size} equal-area pixels)",
        fontsize=9,
    )
    if symmetry_deg is not None:
        fig.text(
            0.5,
            0.01,
            symmetry_note(symmetry_deg),
            ha="center",
            va="bottom",
            fontsize=8,
            color="tab:red",
        )
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
    raw = as_numpy(usage)
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
