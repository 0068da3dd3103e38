"""``cryospin run`` end to end: data, trainer(s), half-sets, evaluation and every output file.

Outputs in ``out``: ``config.yaml``, ``map.mrc``, ``poses.star`` (format of the input's suffix when
its plugin writes it) and ``poses.pkl``, ``metrics.jsonl``, ``fsc.csv``/``fsc.png``,
``orientations.png``, ``head_usage.png``, ``checkpoints/``, ``summary.json``. With ``half_sets``
also ``map_half1.mrc``/``map_half2.mrc`` (half 2 aligned onto half 1) and ``half{1,2}/checkpoints``.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import io_bridge, report
from cryospin.core.engine.config import RunConfig, save_yaml
from cryospin.core.engine.data import ParticleData, open_stack, split_half_sets
from cryospin.core.engine.trainer import Trainer, TrainResult, Truth
from cryospin.core.errors import InputError


def setup_torch(cfg: RunConfig) -> None:
    """Threads and determinism."""
    torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and GPU peak when on CUDA), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if torch.cuda.is_available():
        rss += torch.cuda.max_memory_allocated() / 2**20
    return float(rss)


def _load_truth(cfg: RunConfig, stack: Any, box: int, apix: float) -> Truth:
    truth = Truth()
    if stack.rotations is not None and np.isfinite(np.asarray(stack.rotations)).all():
        truth.rotations = np.asarray(stack.rotations, dtype=np.float64)
    if cfg.gt_map:
        vol, gt_apix = io_bridge.read_map(cfg.gt_map)
        if vol.shape[0] != box:
            from cryospin.core.fourier import fourier_crop

            if vol.shape[0] < box:
                raise InputError(f"--gt-map box {vol.shape[0]} is smaller than the working box {box}")
            if abs(gt_apix * vol.shape[0] / box - apix) > 1e-3 * apix:
                raise InputError(f"--gt-map voxel {gt_apix:.4g} Å x {vol.shape[0]} does not match "
                                 f"the particles' {apix:.4g} Å x {box}")
            vol = fourier_crop(torch.as_tensor(vol, dtype=torch.float64), box, 3).float().numpy()
        truth.volume = torch.as_tensor(vol).numpy()
    return truth


def _plots(out: Path, result: dict[str, Any]) -> dict[str, str]:
    """Draw the plots through the evaluation package; returns ``{name: file}`` drawn."""
    drawn: dict[str, str] = {}
    try:
        from cryospin.core.evaluation import plots
    except ImportError:
        plots = None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["fsc_curves"]
    fn = getattr(plots, "plot_fsc", None) if plots else None
    if fn is not None and curves:
        fn(curves, out / "fsc.png")
    else:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, (freq, fsc, thr) in curves.items():
            ax.plot(freq, fsc, label=name)
            ax.axhline(thr, ls="--", lw=0.7, color="grey")
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("FSC")
        ax.set_ylim(-0.1, 1.05)
        if curves:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no reference (use --gt-map or --half-sets)", ha="center",
                    transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(out / "fsc.png", dpi=100)
        plt.close(fig)
    drawn["fsc"] = "fsc.png"

    rots = result["rotations"]
    fn = getattr(plots, "plot_orientations", None) if plots else None
    if fn is not None:
        fn(rots, out / "orientations.png")
    else:
        import healpy as hp

        nside = 8
        view = rots[:, 2, :]  # viewing direction in map coordinates: third row of A
        theta = np.arccos(np.clip(view[:, 2], -1, 1))
        phi = np.arctan2(view[:, 1], view[:, 0])
        counts = np.bincount(hp.ang2pix(nside, theta, phi), minlength=hp.nside2npix(nside))
        hp.mollview(counts.astype(float), title="viewing directions (HEALPix nside 8)",
                    unit="particles")
        plt.savefig(out / "orientations.png", dpi=100)
        plt.close("all")
    drawn["orientations"] = "orientations.png"

    usage = result["head_usage"]
    fn = getattr(plots, "plot_head_usage", None) if plots else None
    if fn is not None:
        fn(usage, out / "head_usage.png")
    else:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(np.arange(len(usage)), np.asarray(usage) * 100)
        ax.set_xlabel("encoder head")
        ax.set_ylabel("winner share (%)")
        fig.tight_layout()
        fig.savefig(out / "head_usage.png", dpi=100)
        plt.close(fig)
    drawn["head_usage"] = "head_usage.png"
    return drawn


def run_reconstruction(cfg: RunConfig, out: Path, resume: bool = False,
                       console: Any = None) -> dict[str, Any]:
    """Run a whole reconstruction; returns the summary (also written to ``summary.json``).

    Raises:
        cryospin.core.engine.checkpoint.StopRequested: stopped early after a checkpoint.
    """
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup_torch(cfg)
    if not cfg.particles:
        raise InputError("no particle file given (--particles)")
    stack = open_stack(cfg.particles, cfg.datadir)
    n = len(stack)
    if n < 2:
        raise InputError(f"{cfg.particles}: needs at least 2 particles, has {n}")
    save_yaml(cfg, out / "config.yaml")
    base = ParticleData(stack, cfg.box, cfg.invert_contrast, cache=cfg.cache_images)
    truth = _load_truth(cfg, stack, base.box, base.pixel_size_A)
    metrics_path = out / "metrics.jsonl"
    if not resume and metrics_path.exists():
        metrics_path.unlink()

    results: list[TrainResult] = []
    if cfg.half_sets:
        halves = split_half_sets(stack, cfg.seed)
        for k, idx in enumerate(halves, start=1):
            data = ParticleData(stack, cfg.box, cfg.invert_contrast, subset=idx,
                                cache=cfg.cache_images, noise_std=base.noise_std)
            tr = Trainer(cfg, data, out / f"half{k}" / "checkpoints", metrics_path, truth,
                         tag={"half": k}, console=console)
            results.append(tr.fit(resume=resume))
    else:
        tr = Trainer(cfg, base, out / "checkpoints", metrics_path, truth, console=console)
        results.append(tr.fit(resume=resume))

    apix, box = base.pixel_size_A, base.box
    summary: dict[str, Any] = {
        "n_particles": n, "box": box, "pixel_size_A": apix,
        "encoder": cfg.encoder, "decoder": cfg.decoder, "stage_schedule": cfg.stage_schedule,
        "epochs": cfg.epochs, "switch_epoch": results[0].switch_epoch,
    }
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
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
        v1, v2 = results[0].volume.numpy(), results[1].volume.numpy()
        v2a, info = report.align_to_truth(v2, v1, apix)
        io_bridge.write_map(out / "map_half1.mrc", v1, apix)
        io_bridge.write_map(out / "map_half2.mrc", v2a, apix)
        freq, gs = report.fsc_curve(v1, v2a, apix)
        curves["gold-standard (half 1 vs aligned half 2)"] = (freq, gs, 0.143)
        summary["gold_standard_resolution_A"] = report.resolution_at(freq, gs, 0.143)
        summary["half_alignment"] = info.to_dict()
        volume = 0.5 * (v1 + v2a)
        # express half 2's poses in half 1's frame
        from cryospin.core.evaluation.pose_error import apply_pose_alignment

        i2 = results[1].indices
        rotations[i2] = apply_pose_alignment(rotations[i2], info.rotation, info.flipped)
    if truth.volume is not None:
        aligned, info = report.align_to_truth(volume, truth.volume, apix)
        freq, fv = report.fsc_curve(aligned, truth.volume, apix)
        curves["vs truth (aligned)"] = (freq, fv, 0.5)
        summary["resolution_vs_truth_A"] = report.resolution_at(freq, fv, 0.5)
        summary["truth_alignment"] = info.to_dict()
    if truth.rotations is not None:
        res = report.pose_errors(rotations, truth.rotations)
        summary["rotation_error_median_deg"] = res.median_deg
        summary["rotation_error_mean_deg"] = res.mean_deg
        summary["pose_alignment_flipped"] = res.flipped

    io_bridge.write_map(out / "map.mrc", volume, apix)
    origins_A = -shifts_px * apix  # RELION origin undoes the content translation
    io_bridge.write_poses(out / f"poses{Path(cfg.particles).suffix or '.star'}", stack,
                          rotations, origins_A)
    io_bridge.write_poses_pkl(out / "poses.pkl", rotations, origins_A, apix, box)
    _write_fsc_csv(out / "fsc.csv", curves)
    counts = np.bincount(winners[winners >= 0], minlength=max(r.n_heads for r in results))
    usage = (counts / max(counts.sum(), 1)).tolist()
    _plots(out, {"fsc_curves": curves, "rotations": rotations, "head_usage": usage})

    stats: dict[str, Any] = {}
    for k, r in enumerate(results, start=1):
        for stage, st in r.stage_stats.items():
            key = stage if len(results) == 1 else f"{stage}_half{k}"
            stats[key] = st
    summary.update({
        "head_usage": usage,
        "images_per_s": {k: v["images_per_s"] for k, v in stats.items()},
        "stage_time_s": {k: v["time_s"] for k, v in stats.items()},
        "wall_time_s": time.perf_counter() - t_start,
        "peak_memory_MB": peak_memory_mb(),
        "device": str(torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else (cfg.device if cfg.device != "auto" else "cpu"))),
        "resumed": bool(resume),
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _write_fsc_csv(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> None:
    """Columns: shell, frequency_1_per_A, resolution_A, then one FSC column per curve."""
    names = list(curves)
    lines = [",".join(["shell", "frequency_1_per_A", "resolution_A"] + [f'"{k}"' for k in names])]
    if names:
        freq = curves[names[0]][0]
        for i, f in enumerate(freq):
            res = f"{1 / f:.4f}" if f > 0 else "inf"
            vals = [f"{curves[k][1][i]:.6f}" for k in names]
            lines.append(",".join([str(i), f"{f:.6f}", res] + vals))
    path.write_text("\n".join(lines) + "\n")
