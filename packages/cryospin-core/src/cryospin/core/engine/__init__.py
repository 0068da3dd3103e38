"""The training engine: configuration, data, forward model, pose stages, trainer, outputs.

Modules: :mod:`.config` (``RunConfig``), :mod:`.presets` (``paper``, ``paper-real``),
:mod:`.schedule` (work schedule, coarse-to-fine mask), :mod:`.pose_search` (grid search of poses
at the switch and while the mask grows), :mod:`.data` (preprocessing, batches, half-sets),
:mod:`.forward` (forward model and losses), :mod:`.stages` (``amortized`` and ``direct`` pose
stages), :mod:`.pose_table` (per-particle poses and row-sparse Adam), :mod:`.trainer` (loop,
switch rule), :mod:`.checkpoint` (checkpoint format, atomic save, signal guard),
:mod:`.metrics_log` (``metrics.jsonl``), :mod:`.results`, :mod:`.report` (evaluation glue),
:mod:`.io_bridge` (maps and poses through the registry), :mod:`.progress` (rich progress bar),
:mod:`.nonfinite` (stop on a non-finite loss). Multi-process runs:
:mod:`.distributed` (overview, trainer factory, result gathering), :mod:`.process_group` (group
and ``torchrun`` launcher), :mod:`.ddp`, :mod:`.sharding`. A whole run
(train, assemble, evaluate, write) is orchestrated by :mod:`cryospin.core.run`.
"""
