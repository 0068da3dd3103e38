"""``cryospin run`` end to end: check the run folder, then train, assemble, evaluate and write.

The steps are modules of :mod:`cryospin.core.run`: :mod:`.inputs` (the particles),
:mod:`.context` (what every step reads), :mod:`.train`, :mod:`.assemble`, :mod:`.evaluate`,
:mod:`.write`. Outputs in ``out``: ``config.yaml`` and ``run.json`` (the run folder contract,
:mod:`.folder`), ``map.mrc``, ``poses.star``, ``poses.cs`` and ``poses.pkl`` (also rewritten
after every checkpoint, :mod:`cryospin.core.run.poses`), ``metrics.jsonl``,
``fsc.csv``/``fsc.png``, ``orientations.png``, ``head_usage.png``, ``checkpoints/``,
``summary.json``. With ``half_sets`` also ``map_half1.mrc``/``map_half2.mrc`` (half 2 aligned
onto half 1) and ``half{1,2}/checkpoints``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cryospin.core.engine import distributed
from cryospin.core.engine.config import RunConfig
from cryospin.core.errors import InputError
from cryospin.core.particles import ParticleStack
from cryospin.core.run.assemble import assemble
from cryospin.core.run.context import prepare_inputs
from cryospin.core.run.evaluate import evaluate
from cryospin.core.run.folder import check_device, open_run_folder, out_errors
from cryospin.core.run.inputs import open_run_stack
from cryospin.core.run.train import setup_torch, train
from cryospin.core.run.write import run_header, run_record, write_results, write_summary


def run_reconstruction(
    cfg: RunConfig,
    out: Path,
    resume: bool = False,
    console: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a whole reconstruction; returns the summary (also written to ``summary.json``).

    The run folder contract (:mod:`cryospin.core.run.folder`) is checked before anything
    in ``out`` changes: ``--device``, the folder's lock, ``--resume`` against the recorded
    configuration and particle set, or (new run) no other run there unless ``overwrite``.
    ``console``: the rich console of the progress display (``None``: stderr). Ranks other than 0
    of a process group return ``{}``.

    Raises:
        cryospin.core.engine.checkpoint.StopRequested: stopped early after a checkpoint.
        cryospin.core.errors.CryospinError: a check failed, or the run folder cannot be written.
    """
    started = (time.perf_counter(), datetime.now().astimezone())
    out = Path(out)
    check_device(cfg.device)
    setup_torch(cfg)
    dist_on = distributed.init_from_env(cfg) > 1  # torchrun: see engine.distributed
    stack, input_info = open_run_stack(cfg)  # --stack, --apix, --ind, contrast check
    if len(stack) < 2:
        raise InputError(f"{cfg.particles}: needs at least 2 particles, has {len(stack)}")
    folder = open_run_folder(out, cfg, stack, resume, overwrite, writer=distributed.is_main())
    with folder as resumed, out_errors(out):
        return _reconstruct(cfg, out, stack, resumed, console, dist_on, started, input_info)


def _reconstruct(
    cfg: RunConfig,
    out: Path,
    stack: ParticleStack,
    resume: bool,
    console: Any,
    dist_on: bool,
    started: tuple[float, datetime],
    input_info: dict[str, Any],
) -> dict[str, Any]:
    """Train, assemble, evaluate and write every output into the checked, locked run folder.

    ``resume``: a checkpoint is there to continue from; ``started``: (``perf_counter``, wall
    clock) at the start of :func:`run_reconstruction`.
    """
    run = prepare_inputs(cfg, out, stack, dist_on)
    trained = train(run, resume=resume, console=console)
    asm = assemble(trained, run.n, run.pixel_size_A)
    if asm is None:
        return {}  # ranks > 0 write nothing
    ev = evaluate(asm, run)
    write_results(run, asm, ev)
    summary = {
        **run_header(run, asm),
        **ev.summary,
        **run_record(run, asm, started, resume, input_info),
    }
    write_summary(out, summary)
    return summary
