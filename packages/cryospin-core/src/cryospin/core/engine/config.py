"""The run configuration: one pydantic model, validated once, saved as ``config.yaml``.

Defaults are cryospin's, not the paper's where a field's description says so: a work schedule
and coarse-to-fine marching (:mod:`.schedule`), the grid search (:mod:`.pose_search`), batch 32
and the learning rates of the paper's code (README "Defaults"); ``preset: paper`` restores the
paper's text (Sec. 5 "Implementation details", Supp. A-B; :mod:`.presets`). Every field can be
set in a YAML file (``--config``), ``--set KEY=VALUE`` or a flag, which override it.
A bad value raises :class:`cryospin.core.errors.ConfigError` with one line naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryospin.core.errors import ConfigError


class AutoSwitch(BaseModel):
    """The automatic rule for leaving the amortized stage (``switch: auto``).

    After every amortized epoch ``e >= min_epochs`` the engine knows

    * ``head_change``: the share of particles whose winning head differs from epoch ``e - 1``;
    * ``loss_change``: ``|loss_e - loss_{e-1}| / loss_{e-1}`` (mean winner-takes-all loss).

    The heads count as settled when ``head_change <= head_change_max``, or when it has stopped
    falling: it dropped by at most ``head_plateau_drop`` over the last ``head_plateau_window``
    epochs. The plateau test is needed because the level at which head change settles depends on
    the particle: on the HSP90 benchmark (a C2 dimer, 7 heads) it stays at 0.26-0.35 from epoch 14
    on, heads swapping between symmetry mates, so an absolute threshold never fires. The rule
    switches when the heads are settled and ``loss_change <= loss_change_max`` for ``patience``
    consecutive epochs, or at the latest after ``max_epochs`` amortized epochs.

    Rationale (paper Sec. 4.2): once the pose posterior is unimodal the winning head stops
    changing and the loss plateaus; further amortized epochs only pay the amortization gap.
    Evidence (README, "Benchmarks"): on HSP90 a switch after 10 epochs froze the poses at a 34°
    median error, a switch after 40 reached 4.9°; the pose error kept falling while the loss
    still changed by more than 0.2% per epoch, hence the tight default. With a growing frequency
    mask the loss also changes because the mask does, which holds the switch until the mask has
    nearly reached its final radius.
    """

    model_config = ConfigDict(extra="forbid")

    head_change_max: float = Field(0.1, ge=0, le=1)
    head_plateau_drop: float = Field(0.02, ge=0, le=1)
    head_plateau_window: int = Field(5, ge=1)
    loss_change_max: float = Field(0.002, ge=0)
    patience: int = Field(3, ge=1)
    min_epochs: int = Field(5, ge=1)
    max_epochs: int = Field(15, ge=1)

    def heads_settled(self, head_changes: Sequence[float | None]) -> bool:
        """Whether the newest of ``head_changes`` (one per amortized epoch) meets the rule."""
        if not head_changes or head_changes[-1] is None:
            return False
        now = head_changes[-1]
        if now <= self.head_change_max:
            return True
        w = self.head_plateau_window
        before = head_changes[-1 - w] if len(head_changes) > w else None
        return before is not None and before - now <= self.head_plateau_drop

    def decide(
        self,
        epochs_done: int,
        head_changes: Sequence[float | None],
        loss_change: float | None,
        streak: int,
    ) -> tuple[bool, int]:
        """Apply the rule after an amortized epoch: ``(switch now, new streak count)``.

        ``head_changes`` holds the head change of every amortized epoch so far (``None`` where
        unknown, e.g. the first); ``streak`` counts the consecutive epochs that met the rule so
        far; a ``None`` loss change never meets it.
        """
        ok = (
            epochs_done >= self.min_epochs
            and self.heads_settled(head_changes)
            and loss_change is not None
            and loss_change <= self.loss_change_max
        )
        streak = streak + 1 if ok else 0
        return streak >= self.patience or epochs_done >= self.max_epochs, streak


class RunConfig(BaseModel):
    """Everything ``cryospin run`` needs; unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    particles: str | None = Field(None, description="particle file (.star, .cs, ...); by suffix")
    datadir: str | None = Field(None, description="folder that image paths are relative to")
    stack: str | None = Field(
        None, description="stack file replacing the single stack the particle file names"
    )
    ind: str | None = Field(
        None, description="particle subset: cryoDRGN index .pkl or text file of 0-based indices"
    )
    apix: float | None = Field(None, gt=0, description="pixel size in Å, overriding the file's")
    preset: str | None = Field(
        None, description="named base settings: paper, paper-real (engine.presets)"
    )
    encoder: str = "multihead"
    decoder: str = "hartley"
    encoder_config: dict[str, Any] = Field(default_factory=dict)
    decoder_config: dict[str, Any] = Field(default_factory=dict)

    box: int | None = Field(None, ge=8, description="working box: Fourier-crop images to it")
    epochs: int | None = Field(
        None,
        ge=1,
        description="total epochs; None: from the work schedule (amortized_images, direct_images; "
        "resolve_schedule)",
    )
    batch_size: int = Field(
        32, ge=1, description="images per step (paper text 64; the paper's code and cryospin 32)"
    )
    seed: int = 0
    shifts: bool = Field(False, description="estimate in-plane translations")
    max_shift_A: float | None = Field(None, gt=0, description="clamp |shift| (default L/4 px)")
    half_sets: bool = False
    gt_map: str | None = None

    stage_schedule: Literal["semi-amortized", "amortized", "direct"] = Field(
        "semi-amortized", description="semi-amortized: amortized then direct; or one stage only"
    )
    amortized_stage: str = Field(
        "amortized", description="registered pose stage playing the amortized role (plugins)"
    )
    direct_stage: str = Field(
        "direct", description="registered pose stage playing the direct role (plugins)"
    )
    amortized_stage_config: dict[str, Any] = Field(default_factory=dict)
    direct_stage_config: dict[str, Any] = Field(default_factory=dict)
    switch: Literal["epoch", "auto"] = "epoch"
    switch_epoch: int | None = Field(
        None,
        ge=0,
        description="epochs of the amortized stage (switch: epoch); None: "
        "ceil(amortized_images / N)",
    )
    amortized_images: int = Field(
        200_000,
        ge=1,
        description="work schedule: images the amortized stage sees, whatever N (6,250 steps of "
        "32; the paper's 7 epochs of 50,000 at batch 64 are 5,500 steps)",
    )
    direct_images: int = Field(
        100_000, ge=1, description="work schedule: images the direct stage sees"
    )
    direct_min_epochs: int = Field(
        5, ge=1, description="work schedule: at least this many direct-stage visits per particle"
    )
    amortized_box: int | None = Field(
        32,
        ge=8,
        description="semi-amortized: the amortized stage compares only the lowest "
        "amortized_box / 2 Fourier shells and its encoder sees the images Fourier-cropped to "
        "this box (coarse-to-fine); None: the full box",
    )
    coarse_to_fine: bool = Field(
        True,
        description="frequency marching: the mask holds amortized_box / 2 shells through the "
        "amortized stage, then grows to mask_radius over the first two "
        "thirds of the direct stage (unless mask_radius_start is set)",
    )
    auto_switch: AutoSwitch = Field(default_factory=AutoSwitch)
    pose_steps: int = Field(5, ge=1, description="direct stage: pose steps per batch")
    switch_search: int = Field(
        4096,
        ge=0,
        description="at the switch and before each direct epoch while the mask grows, score "
        "every particle against this many rotations covering SO(3) and keep the best where it "
        "beats the current pose (engine.pose_search; gaussian loss only); 0: off",
    )
    search_assign: Literal["best", "posterior"] = Field(
        "best",
        description="grid search: take the best grid rotation (projection matching), or draw "
        "one from each particle's posterior over the grid and its current pose",
    )
    search_stop: float = Field(
        0.01,
        ge=0,
        le=1,
        description="stop repeating the grid search once a pass moves fewer than this share of "
        "the particles to another basin (a convergence test; 0: search while the mask grows)",
    )
    init_poses: Literal["random", "file"] = Field(
        "random",
        description="start poses of a run without an encoder (stage_schedule: direct): random, "
        "or the particle file's rotations (and, with shifts, its origins)",
    )
    refine_poses: bool = Field(
        True,
        description="direct stage: optimise the poses; false keeps them fixed (known-pose "
        "reconstruction, the benchmarks' ceiling)",
    )
    volume_steps: int = Field(1, ge=1, description="direct stage: volume steps per batch")

    lr_encoder: float = Field(1e-3, gt=0, description="paper 1e-4 (preset paper)")
    lr_decoder: float = Field(0.01, gt=0, description="paper text 0.05, paper's code 5e-3")
    lr_decoder_direct: float = Field(0.005, gt=0, description="paper text 0.02, paper's code 2e-3")
    lr_pose: float = Field(0.05, gt=0, description="rad per Adam step scale")
    lr_shift: float = Field(0.1, gt=0, description="pixels per Adam step scale")
    pose_betas: tuple[float, float] = (0.9, 0.999)
    pose_optimizer: Literal["sparse", "dense"] = Field(
        "sparse",
        description="direct stage's pose optimiser: sparse: per-particle Adam moments kept from "
        "visit to visit; dense: the paper code's Adam over the whole table (moments decay and "
        "poses drift between visits, each step folded into R0), at the same O(batch) cost; it "
        "diverged from 10-degree starts where sparse converged (bench/pose_optimizer.py)",
    )

    loss: Literal["gaussian", "l1"] = "gaussian"
    mask_radius: float = Field(1.0, gt=0, le=1.5, description="fraction of Nyquist")
    mask_radius_start: float | None = Field(None, gt=0, le=1.5)
    mask_grow_epochs: int = Field(0, ge=0)
    mask_knots: list[tuple[float, float]] | None = Field(
        None,
        description="piecewise-linear mask radius: (epoch, fraction of Nyquist) pairs; set by "
        "resolve_schedule when coarse_to_fine",
    )
    invert_contrast: bool | None = Field(
        None,
        description="multiply images by -1; None: the format's default (see engine.data)",
    )

    num_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of torch; None: torch's default (OMP_NUM_THREADS, else one per "
        "core). Threads x concurrent runs above the core count slows training many-fold",
    )
    device: str = "cpu"
    deterministic: bool = True
    max_steps: int | None = Field(None, ge=1, description="stop (with a checkpoint) after k steps")
    eval_every: int = Field(1, ge=1, description="epochs between evaluations vs truth")
    progress: bool = True
    tensorboard: bool = Field(
        False, description="also write the per-epoch scalars for TensorBoard (OUT/tensorboard)"
    )
    cache_images: bool = Field(
        True, description="keep the preprocessed stack in memory (when it fits in 2 GiB)"
    )

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.mask_radius_start is not None and self.mask_grow_epochs == 0:
            raise ValueError("mask_radius_start needs mask_grow_epochs > 0")
        if self.switch_search and self.loss != "gaussian":
            raise ValueError("switch_search scores with the gaussian loss; set loss: gaussian")
        b1, b2 = self.pose_betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError("pose_betas must lie in [0, 1)")
        return self

    def mask_radius_at(self, epoch: int) -> float:
        """Frequency-mask radius (fraction of Nyquist) used during ``epoch`` (0-based)."""
        if self.mask_knots:
            xs, ys = zip(*self.mask_knots, strict=True)
            return float(np.interp(epoch, xs, ys))
        if self.mask_radius_start is None or self.mask_grow_epochs == 0:
            return self.mask_radius
        t = min(1.0, epoch / self.mask_grow_epochs)
        return self.mask_radius_start + t * (self.mask_radius - self.mask_radius_start)


def _format_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "config"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"invalid config field '{prefix}{loc}': {err.get('msg', 'invalid')}{shown}"


def validate_config(data: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` (on top of ``data["preset"]``, :mod:`.presets`).

    Raises:
        ConfigError: a bad value or unknown preset (one line naming the field).
    """
    from cryospin.core.engine.presets import apply_preset

    try:
        return RunConfig.model_validate(apply_preset(data))
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def validate_component_config(cls: Any, data: dict[str, Any], field: str) -> Any:
    """Validate ``data`` with the component's own ``Config``; errors name ``field.sub``."""
    try:
        return cls.Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, prefix=f"{field}.")) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a malformed file raises :class:`ConfigError` naming it."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of fields")
    return data


def save_yaml(cfg: RunConfig, path: Path) -> None:
    """Write the resolved configuration (every field) as YAML, atomically."""
    from cryospin.core.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
