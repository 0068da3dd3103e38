"""Run orchestration: ``cryospin run`` from a configuration to the files of its run folder.

:func:`run_reconstruction` (:mod:`.reconstruct`) checks the run folder (:mod:`.folder`: lock,
manifest, ``--resume`` checks), then runs the steps, each a module: :mod:`.inputs` (particle
file, ``--apix``, ``--ind``, contrast check), :mod:`.context` (what every step reads, the truth),
:mod:`.train` (one trainer per half-set), :mod:`.assemble` (processes and half-sets -> one
result), :mod:`.evaluate` (final FSC, pose errors vs the truth), :mod:`.write` (maps, poses,
``fsc.csv``, plots, ``summary.json``); :mod:`.poses` writes the pose files (at the end and after
every checkpoint). The method and its loop are :mod:`cryospin.core.engine`'s.
"""

from cryospin.core.run.reconstruct import run_reconstruction

__all__ = ["run_reconstruction"]
