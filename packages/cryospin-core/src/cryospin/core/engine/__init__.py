"""The training engine: configuration, data, forward model, pose stages, trainer, outputs.

Modules: :mod:`.config` (``RunConfig``), :mod:`.presets` (``paper``, ``paper-real``),
:mod:`.schedule` (work schedule, coarse-to-fine mask), :mod:`.pose_search` (grid search of poses
at the switch and while the mask grows), :mod:`.data` (preprocessing, batches, half-sets),
:mod:`.forward` (forward model and losses), :mod:`.stages` (``amortized`` and ``direct`` pose
stages), :mod:`.pose_table` (per-particle poses and row-sparse Adam), :mod:`.trainer` (the one
training loop, for one process and every torchrun rank), :mod:`.models` (models, optimisers),
:mod:`.loop_state` (loop state and per-particle rows, saved whole), :mod:`.epoch_end` (epoch
record, per-epoch evaluation on gathered arrays, switch rule), :mod:`.passes` (passes over a
shard: switch pass, grid searches, final poses), :mod:`.collective` (what the trainer asks of
other processes; a no-op in one process), :mod:`.checkpoint` (atomic save, safe load, signal
guard),
:mod:`.metrics_log` (``metrics.jsonl``), :mod:`.results`, :mod:`.report` (evaluation glue),
:mod:`.io_bridge` (maps and poses through the registry), :mod:`.progress` (rich progress bar),
:mod:`.nonfinite` (stop on a non-finite loss). Multi-process runs:
:mod:`.distributed` (overview, result gathering, summary fields), :mod:`.process_group` (group
and ``torchrun`` launcher), :mod:`.ddp`, :mod:`.sharding` (particle shards and the checkpoint
format: ``last.pt`` plus one shard file per process). A whole run
(train, assemble, evaluate, write) is orchestrated by :mod:`cryospin.core.run`.
"""
