"""``cryospin grid``: systematic ablations (component x option x seed grids), run and reported.

Modules: :mod:`.spec` (grid files: format, loading), :mod:`.model` (spec, points, grid),
:mod:`.keys` (dotted keys, ``--set``, labels), :mod:`.expand` (points x axes x seeds),
:mod:`.validate` (up-front checks of every point), :mod:`.runs` (run folders, state, simulated
input, one point), :mod:`.launch` (local, ``--jobs N``, SLURM through submitit), :mod:`.worker`
(one point in a subprocess), :mod:`.collect` (a grid folder's runs),
:mod:`.report` (aggregation over seeds, CSV/Markdown, plots).
Shipped grids live in ``grids/*.yaml`` and are addressable by name.
"""
