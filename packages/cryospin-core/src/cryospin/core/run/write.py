"""Writing step of a run: maps, pose files, ``fsc.csv``, plots and ``summary.json``.

Files in the run folder: ``map.mrc`` (with half-sets also ``map_half1.mrc`` and
``map_half2.mrc``, half 2 aligned onto half 1), ``poses.star``, ``poses.cs`` and ``poses.pkl``
(:mod:`cryospin.core.run.poses`), ``fsc.csv``, ``fsc.png``, ``orientations.png``,
``head_usage.png``, and last ``summary.json``.
"""

from __future__ import annotations

import resource
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import distributed, io_bridge, report
from cryospin.core.errors import ConfigError
from cryospin.core.run.assemble import Assembled
from cryospin.core.run.context import RunInputs
from cryospin.core.run.evaluate import Evaluation
from cryospin.core.run.poses import write_pose_files


def write_results(run: RunInputs, asm: Assembled, ev: Evaluation) -> None:
    """Write the maps, the pose files, ``fsc.csv`` and the plots into ``run.out``."""
    out, apix, box = run.out, run.pixel_size_A, run.box
    if asm.half_maps is not None:
        io_bridge.write_map(out / "map_half1.mrc", asm.results[0].volume.numpy(), apix)
        io_bridge.write_map(out / "map_half2.mrc", asm.half_maps.aligned, apix)
    io_bridge.write_map(out / "map.mrc", asm.volume, apix)
    write_pose_files(out, run.particles, run.stack, asm.rotations, asm.shifts_px, apix, box)
    write_fsc_csv(out / "fsc.csv", ev.fsc_columns, apix, box)
    symmetry_deg = ev.summary.get("symmetry_deg")
    _plots(out, ev.curves, asm.rotations, asm.head_usage, symmetry_deg)


def write_fsc_csv(path: Path, cols: dict[str, np.ndarray], apix: float, box: int) -> None:
    """``fsc.csv``: shell, frequency_per_A, resolution_A, fsc, then every curve by name.

    ``fsc`` is the vs-truth curve when a truth is given, else the gold-standard half-map curve
    (both unmasked); the named columns (``fsc_vs_truth``, ``fsc_vs_truth_masked``,
    ``fsc_half_maps``, ``fsc_half_maps_masked``) follow. Without any reference ``fsc`` is NaN.
    """
    from cryospin.core.evaluation.outputs import write_fsc_csv as write_csv
    from cryospin.core.fsc import shell_frequencies

    freq = shell_frequencies(box, apix).numpy()
    main = next(iter(cols.values())) if cols else np.full_like(freq, np.nan)
    write_csv(path, freq, main, cols)


def _plots(
    out: Path,
    curves: dict[str, Any],
    rotations: np.ndarray,
    usage: list[float],
    symmetry_deg: float | None,
) -> None:
    """Draw fsc.png, orientations.png, head_usage.png (:mod:`cryospin.core.evaluation.plots`).

    ``symmetry_deg``: a self-symmetry of the truth map found by the pose evaluation (noted on the
    orientation plot). Without healpy (the ``plots`` extra) orientations.png is skipped with a
    warning naming the extra.
    """
    from cryospin.core.evaluation.plots import plot_fsc, plot_head_usage, plot_orientations

    plot_fsc(curves, out / "fsc.png")
    try:
        plot_orientations(rotations, out / "orientations.png", symmetry_deg=symmetry_deg)
    except ConfigError as exc:
        warnings.warn(f"orientations.png not drawn: {exc}", stacklevel=2)
    plot_head_usage(np.asarray(usage), out / "head_usage.png")


def run_header(run: RunInputs, asm: Assembled) -> dict[str, Any]:
    """Return the first fields of ``summary.json``: particles, box, components, schedule."""
    cfg, first = run.cfg, asm.results[0]
    return {
        "n_particles": run.n,
        "box": run.box,
        "pixel_size_A": run.pixel_size_A,
        "encoder": cfg.encoder,
        "decoder": cfg.decoder,
        "stage_schedule": cfg.stage_schedule,
        "epochs": first.epochs,
        "switch_epoch": first.switch_epoch,
    }


def run_record(
    run: RunInputs,
    asm: Assembled,
    started: tuple[float, datetime],
    resumed: bool,
    input_info: dict[str, Any],
) -> dict[str, Any]:
    """Return the last fields of ``summary.json``: speed, time, memory, device, inputs, provenance.

    ``started``: (``time.perf_counter()``, wall clock) at the start of the run; ``input_info``:
    what :func:`cryospin.core.run.inputs.open_run_stack` recorded (its ``invert_contrast`` is
    replaced by the inversion applied).
    """
    stats: dict[str, Any] = {}
    for k, r in enumerate(asm.results, start=1):
        for stage, st in r.stage_stats.items():
            stats[stage if len(asm.results) == 1 else f"{stage}_half{k}"] = st
    return {
        "head_usage": asm.head_usage,
        "images_per_s": {k: v["images_per_s"] for k, v in stats.items()},
        "stage_time_s": {k: v["time_s"] for k, v in stats.items()},
        "wall_time_s": time.perf_counter() - started[0],
        "peak_memory_MB": peak_memory_mb(),
        "cpu_time_s": cpu_seconds(),
        "device": str(torch.device(_device_name(run.cfg.device))),
        "resumed": bool(resumed),
        **distributed.summary_fields(asm.results),
        "invert_contrast": run.data.invert,
        **{k: v for k, v in input_info.items() if k != "invert_contrast"},
        **report.run_provenance(started[1]),
    }


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """Write ``out/summary.json`` (atomically, keys in ``summary``'s order)."""
    from cryospin.core.evaluation.outputs import write_summary_json

    write_summary_json(out / "summary.json", summary)


def _device_name(device: str) -> str:
    """Return the device the run used: ``auto`` is ``cuda`` when available, else ``cpu``."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and GPU peak when on CUDA), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if torch.cuda.is_available():
        rss += torch.cuda.max_memory_allocated() / 2**20
    return float(rss)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return float(ru.ru_utime + ru.ru_stime)
