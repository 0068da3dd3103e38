"""``cryospin grid``: systematic ablations (component x option x seed grids), run and reported.

A package of its own (``cryospin-grid``) on top of cryospin-core: its :mod:`.plugin` adds the
``grid`` command through the ``register_commands`` hook, like any plugin, and SLURM support
(submitit) is its ``slurm`` extra. Modules: :mod:`.cli` (the command), :mod:`.spec` (grid files:
format, loading), :mod:`.model` (spec, points, grid), :mod:`.keys` (point labels),
:mod:`.expand` (points x axes x seeds), :mod:`.validate` (up-front checks of every point),
:mod:`.runs` (run folders, state, simulated input, one point), :mod:`.launch` (local,
``--jobs N``, SLURM through submitit), :mod:`.worker` (one point in a subprocess),
:mod:`.collect` (a grid folder's runs), :mod:`.report` (aggregation over seeds, CSV/Markdown,
plots).
Shipped grids live in ``grids/*.yaml`` and are addressable by name.
"""
