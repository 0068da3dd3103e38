"""The training engine: configuration, data, forward model, pose stages, trainer, outputs.

Modules: :mod:`.config` (``RunConfig``), :mod:`.data` (preprocessing, batches, half-sets),
:mod:`.forward` (forward model and losses), :mod:`.stages` (``amortized`` and ``direct`` pose
stages), :mod:`.pose_table` (per-particle poses and row-sparse Adam), :mod:`.trainer` (loop,
switch rule, checkpoints), :mod:`.checkpoint`, :mod:`.pipeline` (``cryospin run`` end to end),
:mod:`.report` (evaluation glue), :mod:`.io_bridge` (maps and poses through the registry),
:mod:`.progress` (rich progress bar).
"""
