"""The rich progress bar of a run: stage, epoch, images/s, ETA and the running loss."""

from __future__ import annotations

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
        self.prefix = "".join(f"{k} {v} " for k, v in (tag or {}).items())
        self.console = console or Console(stderr=True)
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
        self.progress.update(self.task, completed=epoch * self.n + min(done_in_epoch, self.n))

    def describe(self, stage: str, epoch: int) -> None:
        """Show the stage and epoch."""
        self.progress.update(
            self.task, description=f"{self.prefix}{stage} epoch {epoch + 1}/{self.cfg.epochs}"
        )

    def advance(self, images: int, loss: float, ips: float) -> None:
        """Count ``images`` more; the loss shown is an exponential running mean."""
        self._loss = loss if self._loss is None else 0.9 * self._loss + 0.1 * loss
        self.progress.update(self.task, advance=images, loss=self._loss, ips=ips)

    def epoch_done(self, rec: dict[str, Any]) -> None:
        """Print a one-line epoch summary above the bar."""
        if not self.cfg.progress:
            return
        keys = (
            "loss",
            "images_per_s",
            "pose_change_deg",
            "head_change",
            "rotation_error_median_deg",
            "resolution_vs_truth_A",
        )
        parts = [f"{k}={rec[k]:.4g}" for k in keys if isinstance(rec.get(k), (int, float))]
        self.progress.console.print(
            f"{self.prefix}epoch {rec['epoch'] + 1} [{rec['stage']}] "
            + " ".join(parts)
            + (" -> switching to direct" if rec.get("switch") else "")
        )
