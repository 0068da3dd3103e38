"""The rich progress bar of a run: stage, epoch, images/s, ETA and the running loss.

Each finished epoch is also one event line (:func:`cryospin.core.engine.run_log.event`, with the
epoch record as its metrics, for ``run.log`` and TensorBoard) ending in the elapsed time and the
ETA of the trainer; the terminal shows it above the bar, unwrapped when stderr is redirected.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """One bar over all epochs of a trainer (``total = epochs * n_particles`` images)."""

    def __init__(
        self, cfg: Any, n: int, tag: dict[str, Any] | None = None, console: Console | None = None
    ) -> None:
        self.cfg = cfg
        self.n = n
        self.tag = dict(tag or {})
        self.prefix = "".join(f"{k} {v} " for k, v in self.tag.items())
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[ips]:>7.1f} img/s"),
            TextColumn("loss {task.fields[loss]:.4g}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not cfg.progress,
            transient=False,
        )
        self.task: Any = None
        self._loss: float | None = None
        self._t0 = time.perf_counter()
        self._done0 = 0

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        self.task = self.progress.add_task(
            "start", total=self.cfg.epochs * self.n, ips=0.0, loss=float("nan")
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, epoch: int, done_in_epoch: int) -> None:
        """Position the bar at a (resumed) epoch and image count."""
        self._done0 = epoch * self.n + min(done_in_epoch, self.n)
        self._t0 = time.perf_counter()
        self.progress.update(self.task, completed=self._done0)

    def describe(self, stage: str, epoch: int) -> None:
        """Show the stage and epoch."""
        self.progress.update(
            self.task, description=f"{self.prefix}{stage} epoch {epoch + 1}/{self.cfg.epochs}"
        )

    def advance(self, images: int, loss: float, ips: float) -> None:
        """Count ``images`` more; the loss shown is an exponential running mean."""
        self._loss = loss if self._loss is None else 0.9 * self._loss + 0.1 * loss
        self.progress.update(self.task, advance=images, loss=self._loss, ips=ips)

    def _times(self, epochs_done: int) -> str:
        """``elapsed H:MM:SS ETA H:MM:SS`` of this trainer after ``epochs_done`` epochs."""
        elapsed = time.perf_counter() - self._t0
        done = epochs_done * self.n - self._done0
        left = (self.cfg.epochs - epochs_done) * self.n
        eta = elapsed / done * left if done > 0 else float("nan")

        def hms(sec: float) -> str:
            if sec != sec:
                return "?"
            s = int(round(sec))
            return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"

        return f"elapsed {hms(elapsed)} ETA {hms(eta)}"

    def epoch_done(self, rec: dict[str, Any]) -> None:
        """Report a one-line epoch summary: an event, printed above the bar with ``progress``."""
        from cryospin.core.engine.run_log import event

        keys = (
            "loss",
            "images_per_s",
            "pose_change_deg",
            "head_change",
            "rotation_error_median_deg",
            "resolution_vs_truth_A",
        )
        parts = [f"{k}={rec[k]:.4g}" for k in keys if isinstance(rec.get(k), (int, float))]
        line = (
            f"{self.prefix}epoch {rec['epoch'] + 1}/{self.cfg.epochs} [{rec['stage']}] "
            + " ".join(parts)
            + (" -> switching to direct" if rec.get("switch") else "")
            + f" {self._times(rec['epoch'] + 1)}"
        )
        event(line, metrics={**self.tag, **rec}, on_terminal=False)
        if self.cfg.progress:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
