"""``cryospin grid report DIR``: one table over a grid's runs, seeds aggregated, and two plots.

Per run (from ``summary.json`` and ``metrics.jsonl`` of ``cryospin run``):

* ``rotation_error_mean_deg`` / ``rotation_error_median_deg``: after the global rotation and hand;
* ``resolution_vs_truth_A`` (FSC = 0.5 against the truth map) and ``gold_standard_resolution_A``
  (FSC = 0.143 between aligned half-maps);
* ``time_to_target_s``: training time until the per-epoch resolution vs truth first reaches the
  target (``<=`` target Å). Training time is the running sum of the epochs' ``wall_time_s`` (time
  inside training steps; evaluations and the switch pass are not counted). The target is
  ``--target-resolution`` or, by default, the coarsest of the runs' best per-epoch resolutions,
  i.e. the finest resolution every run reached. Runs with half-sets use half 1's records;
* ``wall_time_s`` (whole run), ``images_per_s_<stage>`` (per stage; halves averaged),
  ``peak_memory_MB``.

Seeds of a point are aggregated as the mean and the sample standard deviation (``ddof = 1``; empty
with a single seed) over the seeds that have a value. Files: ``DIR/report.csv`` (numbers: one
``<metric>_mean`` and ``<metric>_std`` column each), ``DIR/report.md`` (``mean ± std``),
``DIR/resolution_vs_time.png`` (paper Fig. 3: resolution vs training time, mean over seeds by
epoch, band = std) and ``DIR/pose_error_per_epoch.png`` (paper Fig. 4: median rotation error per
epoch; a marker at the switch to the direct stage).

The runs are collected by :func:`cryospin.grid.collect.collect`.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryospin.core.atomic import atomic_path, atomic_write_text
from cryospin.grid.collect import RunRecord, collect
from cryospin.grid.keys import format_value

#: (key, column title, unit) of the fixed metrics, in table order
METRICS: list[tuple[str, str]] = [
    ("rotation_error_mean_deg", "mean rot. err. (°)"),
    ("rotation_error_median_deg", "median rot. err. (°)"),
    ("resolution_vs_truth_A", "FSC 0.5 vs truth (Å)"),
    ("gold_standard_resolution_A", "gold-std FSC 0.143 (Å)"),
    ("time_to_target_s", "time to target (s)"),
    ("wall_time_s", "wall time (s)"),
    ("peak_memory_MB", "peak memory (MB)"),
]
STAGE_PREFIX = "images_per_s_"


@dataclass
class Row:
    """One point: seeds aggregated."""

    label: str
    values: dict[str, Any]
    runs: list[RunRecord]
    stats: dict[str, tuple[float | None, float | None, int]] = field(default_factory=dict)

    @property
    def n_done(self) -> int:
        """Runs with a summary."""
        return sum(r.summary is not None for r in self.runs)


# ------------------------------------------------------------------------------ metrics
def time_to_resolution(epochs: list[dict[str, Any]], target_A: float) -> float | None:
    """Training time (running sum of ``wall_time_s``) when ``resolution_vs_truth_A <= target``."""
    total = 0.0
    for rec in epochs:
        total += float(rec.get("wall_time_s") or 0.0)
        res: Any = rec.get("resolution_vs_truth_A")
        if _num(res) and res <= target_A:
            return total
    return None


def best_resolution(epochs: list[dict[str, Any]]) -> float | None:
    """Return the finest per-epoch resolution vs truth (Å), or ``None``."""
    vals = [r["resolution_vs_truth_A"] for r in epochs if _num(r.get("resolution_vs_truth_A"))]
    return min(vals) if vals else None


def default_target(runs: list[RunRecord]) -> float | None:
    """Return the coarsest best per-epoch resolution of the finished runs (every run reached it)."""
    found = [best_resolution(r.epochs) for r in runs if r.summary is not None]
    bests = [b for b in found if b is not None]
    return max(bests) if bests else None


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def run_metrics(rec: RunRecord, target_A: float | None) -> dict[str, float | None]:
    """Return the metrics of one finished run (``None`` where the run has no value)."""
    s = rec.summary or {}
    out: dict[str, float | None] = {}
    for key, _ in METRICS:
        out[key] = float(s[key]) if _num(s.get(key)) else None
    out["time_to_target_s"] = (
        time_to_resolution(rec.epochs, target_A) if target_A is not None else None
    )
    per_stage: dict[str, list[float]] = {}
    for key, val in (s.get("images_per_s") or {}).items():
        if _num(val):
            per_stage.setdefault(re.sub(r"_half\d+$", "", key), []).append(float(val))
    for stage, vals in per_stage.items():
        out[STAGE_PREFIX + stage] = statistics.fmean(vals)
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std or None, count)``."""
    if not values:
        return None, None, 0
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std, len(values)


def aggregate(runs: list[RunRecord], target_A: float | None) -> tuple[list[Row], list[str]]:
    """Rows (one per point label, grid order) and the metric keys that have any value."""
    rows: dict[str, Row] = {}
    for r in runs:
        rows.setdefault(r.label, Row(r.label, r.values, [])).runs.append(r)
    keys = [k for k, _ in METRICS]
    per_run = {id(r): run_metrics(r, target_A) for r in runs if r.summary is not None}
    stages = sorted(
        {k for m in per_run.values() for k in m if k.startswith(STAGE_PREFIX)},
        key=lambda k: ({"amortized": 0, "direct": 1}.get(k[len(STAGE_PREFIX) :], 2), k),
    )
    keys += stages
    for row in rows.values():
        for k in keys:
            vals = [per_run[id(r)].get(k) for r in row.runs if id(r) in per_run]
            row.stats[k] = mean_std([v for v in vals if v is not None])
    present = [k for k in keys if any(row.stats[k][2] for row in rows.values())]
    return list(rows.values()), present


# ------------------------------------------------------------------------------ output
def title_of(key: str, target_A: float | None) -> str:
    """Column title of a metric key."""
    for k, t in METRICS:
        if k == key:
            if k == "time_to_target_s" and target_A is not None:
                return f"time to {target_A:.3g} Å (s)"
            return t
    return f"images/s {key[len(STAGE_PREFIX) :]}"


def cell(stat: tuple[float | None, float | None, int]) -> str:
    """``mean ± std`` (4 significant digits); ``mean`` alone for one seed; empty without data."""
    mean, std, _ = stat
    if mean is None:
        return ""
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def axis_columns(manifest: dict[str, Any], rows: list[Row]) -> list[str]:
    """Axis names that distinguish points (from the manifest, else from the values)."""
    axes = list(manifest.get("axes") or [])
    for row in rows:
        for k in row.values:
            if k not in axes:
                axes.append(k)
    return axes


def write_csv(path: Path, manifest: dict[str, Any], rows: list[Row], keys: list[str]) -> None:
    """Numbers only: point, axes, seeds done/total, ``<metric>_mean``, ``<metric>_std``."""
    axes = axis_columns(manifest, rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "point",
            *axes,
            "seeds_done",
            "seeds_total",
            *[f"{k}_{s}" for k in keys for s in ("mean", "std")],
        ]
    )
    for row in rows:
        stats = [("" if v is None else repr(v)) for k in keys for v in row.stats[k][:2]]
        w.writerow(
            [
                row.label,
                *[format_value(row.values[a]) if a in row.values else "" for a in axes],
                row.n_done,
                len(row.runs),
                *stats,
            ]
        )
    atomic_write_text(path, buf.getvalue())


def markdown(
    manifest: dict[str, Any],
    rows: list[Row],
    keys: list[str],
    target_A: float | None,
    notes: list[str],
) -> str:
    """Return the Markdown report (title, notes, table)."""
    axes = axis_columns(manifest, rows)
    head = ["point", *axes, "seeds", *[title_of(k, target_A) for k in keys]]
    lines = [f"# Grid report: {manifest.get('name', '')}", ""]
    if manifest.get("description"):
        lines += [str(manifest["description"]), ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        vals = [format_value(row.values[a]) if a in row.values else "" for a in axes]
        cells = [
            row.label,
            *vals,
            f"{row.n_done}/{len(row.runs)}",
            *[cell(row.stats[k]) for k in keys],
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def rich_table(
    manifest: dict[str, Any], rows: list[Row], keys: list[str], target_A: float | None
) -> Any:
    """Return the same table as a rich Table for the terminal."""
    from rich.table import Table

    axes = axis_columns(manifest, rows)
    table = Table(title=f"grid {manifest.get('name', '')}: mean ± std over seeds")
    for c in ["point", *axes, "seeds", *[title_of(k, target_A) for k in keys]]:
        table.add_column(c, overflow="fold")
    for row in rows:
        vals = [format_value(row.values[a]) if a in row.values else "" for a in axes]
        table.add_row(
            row.label, *vals, f"{row.n_done}/{len(row.runs)}", *[cell(row.stats[k]) for k in keys]
        )
    return table


def _series(runs: list[RunRecord], key: str, cumulative_time: bool):
    """Per seed ``(x, y)`` lists of a per-epoch metric, truncated to the common length."""
    import numpy as np

    seqs = []
    for r in runs:
        if not r.epochs:
            continue
        t = np.cumsum([float(e.get("wall_time_s") or 0.0) for e in r.epochs])
        x = (
            t
            if cumulative_time
            else np.array([e.get("epoch", i) + 1.0 for i, e in enumerate(r.epochs)])
        )
        y = np.array([e[key] if _num(e.get(key)) else np.nan for e in r.epochs], dtype=float)
        if np.isfinite(y).any():
            seqs.append((x, y))
    if not seqs:
        return None
    n = min(len(x) for x, _ in seqs)
    xs = np.stack([x[:n] for x, _ in seqs])
    ys = np.stack([y[:n] for _, y in seqs])
    return xs, ys


def plot_metric(
    rows: list[Row],
    key: str,
    path: Path,
    cumulative_time: bool,
    xlabel: str,
    ylabel: str,
    title: str,
) -> bool:
    """One line per point (mean over seeds by epoch, band = std); ``False`` when no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for row in rows:
        s = _series([r for r in row.runs if r.summary is not None], key, cumulative_time)
        if s is None:
            continue
        xs, ys = s
        x = xs.mean(axis=0)
        with np.errstate(all="ignore"):
            y = np.nanmean(ys, axis=0)
            sd = np.nanstd(ys, axis=0, ddof=1) if len(ys) > 1 else None
        (line,) = ax.plot(x, y, marker="o", ms=3, label=row.label)
        if sd is not None:
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.15, lw=0)
        sw = (row.runs[0].summary or {}).get("switch_epoch") if row.runs else None
        if not cumulative_time and isinstance(sw, int) and 1 <= sw <= len(x):
            ax.plot([x[sw - 1]], [y[sw - 1]], marker="*", ms=11, color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return True


def build_report(out: Path, target_A: float | None = None, plots: bool = True) -> dict[str, Any]:
    """Collect, aggregate and write ``report.csv``, ``report.md`` and the plots into ``out``.

    Returns ``{"manifest", "rows", "keys", "target_A", "files", "notes", "states"}``.
    """
    out = Path(out)
    manifest, runs = collect(out)
    target = target_A if target_A is not None else default_target(runs)
    rows, keys = aggregate(runs, target)
    states: dict[str, int] = {}
    for r in runs:
        states[r.state] = states.get(r.state, 0) + 1
    notes = ["runs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))]
    if target is not None:
        how = "given" if target_A is not None else "coarsest best resolution over the runs"
        notes.append(f"target resolution {target:.4g} Å ({how}); time = training-step time")
    notes.append("cells: mean ± sample std over seeds")
    files = {"csv": out / "report.csv", "md": out / "report.md"}
    write_csv(files["csv"], manifest, rows, keys)
    if plots:
        p = out / "resolution_vs_time.png"
        if plot_metric(
            rows,
            "resolution_vs_truth_A",
            p,
            True,
            "training time (s)",
            "resolution vs truth, FSC 0.5 (Å)",
            "Resolution vs time (paper Fig. 3)",
        ):
            files["resolution_vs_time"] = p
        else:
            notes.append("no per-epoch resolution vs truth: resolution_vs_time.png not drawn")
        p = out / "pose_error_per_epoch.png"
        if plot_metric(
            rows,
            "rotation_error_median_deg",
            p,
            False,
            "epoch",
            "median rotation error (°)",
            "Pose error per epoch (paper Fig. 4; * = switch)",
        ):
            files["pose_error_per_epoch"] = p
        else:
            notes.append("no per-epoch pose error: pose_error_per_epoch.png not drawn")
    atomic_write_text(files["md"], markdown(manifest, rows, keys, target, notes))
    return {
        "manifest": manifest,
        "rows": rows,
        "keys": keys,
        "target_A": target,
        "files": files,
        "notes": notes,
        "states": states,
    }
