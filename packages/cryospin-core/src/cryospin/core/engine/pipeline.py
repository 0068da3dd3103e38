"""``cryospin run`` end to end: data, trainer(s), half-sets, evaluation and every output file.

Outputs in ``out``: ``config.yaml``, ``map.mrc``, ``poses.star``, ``poses.cs`` and ``poses.pkl``
(also rewritten after every checkpoint, see :mod:`cryospin.core.engine.pose_output`; the input is
opened by :mod:`cryospin.core.engine.inputs`), ``metrics.jsonl``, ``fsc.csv``/``fsc.png``,
``orientations.png``, ``head_usage.png``, ``checkpoints/``, ``summary.json``. With ``half_sets``
also ``map_half1.mrc``/``map_half2.mrc`` (half 2 aligned onto half 1) and ``half{1,2}/checkpoints``.
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
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData, split_half_sets
from cryospin.core.engine.inputs import open_run_stack
from cryospin.core.engine.pose_output import CheckpointPoses, write_pose_files
from cryospin.core.engine.run_folder import check_device, open_run_folder, out_errors
from cryospin.core.engine.trainer import TrainResult, Truth
from cryospin.core.errors import ConfigError, InputError


def setup_torch(cfg: RunConfig) -> None:
    """Threads (torch's default unless ``num_threads`` is set) and determinism."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and GPU peak when on CUDA), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if torch.cuda.is_available():
        rss += torch.cuda.max_memory_allocated() / 2**20
    return float(rss)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return float(ru.ru_utime + ru.ru_stime)


def _load_truth(cfg: RunConfig, stack: Any, box: int, apix: float) -> Truth:
    """Collect the truth for the metrics: the stack's poses and content shifts, when all finite.

    Content shift = -RELION origin, in Å; the ``--gt-map`` is cropped to the working box.
    """
    truth = Truth()
    if stack.rotations is not None and np.isfinite(np.asarray(stack.rotations)).all():
        truth.rotations = np.asarray(stack.rotations, dtype=np.float64)
    if stack.shifts_A is not None and np.isfinite(np.asarray(stack.shifts_A)).all():
        truth.shifts_A = -np.asarray(stack.shifts_A, dtype=np.float64)
    if cfg.gt_map:
        vol, gt_apix = io_bridge.read_map(cfg.gt_map)
        if vol.shape[0] != box:
            from cryospin.core.fourier import fourier_crop

            if vol.shape[0] < box:
                raise InputError(
                    f"--gt-map box {vol.shape[0]} is smaller than the working box {box}"
                )
            if abs(gt_apix * vol.shape[0] / box - apix) > 1e-3 * apix:
                raise InputError(
                    f"--gt-map voxel {gt_apix:.4g} Å x {vol.shape[0]} does not match "
                    f"the particles' {apix:.4g} Å x {box}"
                )
            vol = fourier_crop(torch.as_tensor(vol, dtype=torch.float64), box, 3).float().numpy()
        truth.volume = torch.as_tensor(vol).numpy()
    return truth


def half_set_seeds(seed: int) -> tuple[int, int]:
    """Independent seeds of half-sets 1 and 2, derived from the run's ``seed``.

    Gold-standard half-maps must be refined independently: with one shared seed both halves start
    from the same random map and encoder weights, and their FSC is inflated wherever the data say
    little (a run on pure noise reported a resolution). Each half's trainer (initial map, encoder
    weights, batch order, random poses) gets its own seed, the first 31 bits of the
    ``numpy.random.SeedSequence(seed mod 2**64).spawn(2)`` children: deterministic, independent
    of each other and of ``seed + 1`` (which a trainer uses itself). The half-set split keeps
    ``seed``. Both are recorded in ``summary.json`` (``half_seeds``).
    """
    children = np.random.SeedSequence(seed % 2**64).spawn(2)
    a, b = (int(c.generate_state(1, dtype=np.uint32)[0] >> 1) for c in children)
    return a, b


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


def run_reconstruction(
    cfg: RunConfig,
    out: Path,
    resume: bool = False,
    console: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a whole reconstruction; returns the summary (also written to ``summary.json``).

    The run folder contract (:mod:`cryospin.core.engine.run_folder`) is checked before anything
    in ``out`` changes: ``--device``, the folder's lock, ``--resume`` against the recorded
    configuration and particle set, or (new run) no other run there unless ``overwrite``.

    Raises:
        cryospin.core.engine.checkpoint.StopRequested: stopped early after a checkpoint.
        cryospin.core.errors.CryospinError: a check failed, or the run folder cannot be written.
    """
    t_start = time.perf_counter()
    started_at = datetime.now().astimezone()
    out = Path(out)
    check_device(cfg.device)
    setup_torch(cfg)
    dist_on = distributed.init_from_env(cfg) > 1  # torchrun: see engine.distributed
    stack, input_info = open_run_stack(cfg)  # --stack, --apix, --ind, contrast check
    if len(stack) < 2:
        raise InputError(f"{cfg.particles}: needs at least 2 particles, has {len(stack)}")
    folder = open_run_folder(out, cfg, stack, resume, overwrite, writer=distributed.is_main())
    with folder as resumed, out_errors(out):
        return _reconstruct(
            cfg, out, stack, resumed, console, dist_on, (t_start, started_at), input_info
        )


def _reconstruct(
    cfg: RunConfig,
    out: Path,
    stack: Any,
    resume: bool,
    console: Any,
    dist_on: bool,
    started: tuple[float, datetime],
    input_info: dict[str, Any],
) -> dict[str, Any]:
    """Train and write every output into the checked, locked run folder ``out``.

    ``resume``: a checkpoint is there to continue from; ``started``: (perf_counter, wall clock)
    at the start of :func:`run_reconstruction`.
    """
    t_start, started_at = started
    particles = cfg.particles
    if particles is None:  # open_run_stack read it; a config without one never gets here
        raise ConfigError("no particle file: give --particles (.star, .cs or .mrcs)")
    n = len(stack)
    base = ParticleData(stack, cfg.box, cfg.invert_contrast, cache=cfg.cache_images and not dist_on)
    truth = _load_truth(cfg, stack, base.box, base.pixel_size_A)
    metrics_path = out / "metrics.jsonl"  # a new run's old one was removed by open_run_folder

    results: list[TrainResult] = []
    ckpt_dirs = (
        [out / f"half{k}" / "checkpoints" for k in (1, 2)]
        if cfg.half_sets
        else [out / "checkpoints"]
    )
    pose_files = CheckpointPoses(
        out, particles, stack, base.pixel_size_A, base.box, ckpt_dirs
    )  # poses.star / poses.pkl after every checkpoint (rank 0)
    if cfg.half_sets:
        halves = split_half_sets(stack, cfg.seed)
        seeds = half_set_seeds(cfg.seed)
        for k, idx in enumerate(halves, start=1):
            data = ParticleData(
                stack,
                cfg.box,
                cfg.invert_contrast,
                subset=idx,
                cache=cfg.cache_images and not dist_on,
                noise_std=base.noise_std,
            )
            tr = distributed.make_trainer(
                cfg.model_copy(update={"seed": seeds[k - 1]}),
                data,
                ckpt_dirs[k - 1],
                metrics_path,
                truth,
                tag={"half": k},
                console=console,
                resume=resume,
                on_checkpoint=pose_files,
            )
            results.append(tr.fit(resume=resume))
    else:
        tr = distributed.make_trainer(
            cfg,
            base,
            ckpt_dirs[0],
            metrics_path,
            truth,
            console=console,
            resume=resume,
            on_checkpoint=pose_files,
        )
        results.append(tr.fit(resume=resume))
    gathered = distributed.gather_results(results)  # rank 0 assembles the poses once
    if gathered is None:
        return {}  # ranks > 0 write nothing
    results = gathered

    apix, box = base.pixel_size_A, base.box
    summary: dict[str, Any] = {
        "n_particles": n,
        "box": box,
        "pixel_size_A": apix,
        "encoder": cfg.encoder,
        "decoder": cfg.decoder,
        "stage_schedule": cfg.stage_schedule,
        "epochs": results[0].epochs,
        "switch_epoch": results[0].switch_epoch,
    }
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    csv_cols: dict[str, np.ndarray] = {}
    rotations = np.zeros((n, 3, 3))
    shifts_px = np.zeros((n, 2))
    winners = np.full(n, -1)
    volume = results[0].volume.numpy()
    for r in results:
        rotations[r.indices] = r.rotations
        if r.shifts_px is not None:
            shifts_px[r.indices] = r.shifts_px
        if r.winners is not None:
            winners[r.indices] = r.winners
    if cfg.half_sets:
        from cryospin.core.evaluation.fsc_eval import half_map_fsc
        from cryospin.core.evaluation.pose_error import apply_pose_alignment
        from cryospin.core.evaluation.shift_error import align_shifts

        v1, v2 = results[0].volume.numpy(), results[1].volume.numpy()
        gs = half_map_fsc(v1, v2, apix)
        io_bridge.write_map(out / "map_half1.mrc", v1, apix)
        io_bridge.write_map(out / "map_half2.mrc", gs.aligned, apix)
        curves.update(gs.curves())
        csv_cols.update({"fsc_half_maps": gs.fsc, "fsc_half_maps_masked": gs.fsc_masked})
        summary.update(gs.summary())
        summary["gold_standard_resolution_A"] = gs.resolution_A
        summary["half_seeds"] = list(seeds)
        volume = 0.5 * (v1 + gs.aligned)
        # express half 2's poses in half 1's frame: rotations, and shifts for the map's 3D
        # translation (cryospin.core.evaluation.shift_error)
        i2 = results[1].indices
        align = gs.alignment
        if align is None:  # half_map_fsc aligns by default
            raise RuntimeError("half-map FSC returned no alignment of half 2 onto half 1")
        rotations[i2] = apply_pose_alignment(rotations[i2], align.rotation, align.flipped)
        shifts_px[i2] = align_shifts(shifts_px[i2], rotations[i2], align.shift_A / apix)
    if truth.volume is not None:
        from cryospin.core.evaluation.fsc_eval import fsc_vs_truth

        vt = fsc_vs_truth(volume, truth.volume, apix)
        curves.update(vt.curves())
        csv_cols = {"fsc_vs_truth": vt.fsc, "fsc_vs_truth_masked": vt.fsc_masked, **csv_cols}
        summary.update(vt.summary())
        summary["resolution_vs_truth_A"] = vt.resolution_A
    if truth.rotations is not None:
        # rotation errors (also modulo a symmetry of the truth map, e.g. HSP90's C2) and, when
        # the run estimates shifts and the particle file has them, shift errors (without
        # --shifts every estimate is 0 and the "error" would only restate the true shifts)
        summary.update(
            report.truth_pose_metrics(
                rotations,
                shifts_px * apix,
                truth.rotations,
                truth.shifts_A if cfg.shifts else None,
                truth.volume,
                vt.alignment if truth.volume is not None else None,
            )
        )

    io_bridge.write_map(out / "map.mrc", volume, apix)
    write_pose_files(out, particles, stack, rotations, shifts_px, apix, box)
    _write_fsc_csv(out / "fsc.csv", csv_cols, apix, box)
    counts = np.bincount(winners[winners >= 0], minlength=max(r.n_heads for r in results))
    usage = (counts / max(counts.sum(), 1)).tolist()
    _plots(out, curves, rotations, usage, summary.get("symmetry_deg"))

    stats: dict[str, Any] = {}
    for k, r in enumerate(results, start=1):
        for stage, st in r.stage_stats.items():
            key = stage if len(results) == 1 else f"{stage}_half{k}"
            stats[key] = st
    summary.update(
        {
            "head_usage": usage,
            "images_per_s": {k: v["images_per_s"] for k, v in stats.items()},
            "stage_time_s": {k: v["time_s"] for k, v in stats.items()},
            "wall_time_s": time.perf_counter() - t_start,
            "peak_memory_MB": peak_memory_mb(),
            "cpu_time_s": _cpu_seconds(),
            "device": str(
                torch.device(
                    "cuda"
                    if cfg.device == "auto" and torch.cuda.is_available()
                    else (cfg.device if cfg.device != "auto" else "cpu")
                )
            ),
            "resumed": bool(resume),
            **distributed.summary_fields(cfg),
            "invert_contrast": base.invert,
            **{k: v for k, v in input_info.items() if k != "invert_contrast"},
            **report.run_provenance(started_at),
        }
    )
    from cryospin.core.evaluation.outputs import write_summary_json

    write_summary_json(out / "summary.json", summary)
    return summary


def _write_fsc_csv(path: Path, cols: dict[str, np.ndarray], apix: float, box: int) -> None:
    """``fsc.csv``: shell, frequency_per_A, resolution_A, fsc, then every curve by name.

    ``fsc`` is the vs-truth curve when a truth is given, else the gold-standard half-map curve
    (both unmasked); the named columns (``fsc_vs_truth``, ``fsc_vs_truth_masked``,
    ``fsc_half_maps``, ``fsc_half_maps_masked``) follow. Without any reference ``fsc`` is NaN.
    """
    from cryospin.core.evaluation.outputs import write_fsc_csv
    from cryospin.core.fsc import shell_frequencies

    freq = shell_frequencies(box, apix).numpy()
    main = next(iter(cols.values())) if cols else np.full_like(freq, np.nan)
    write_fsc_csv(path, freq, main, cols)
