"""Evaluation of reconstructions and poses, and the files a run writes.

Modules (import them directly; this package imports nothing heavy):

* :mod:`~cryospin.core.evaluation.pose_error` - rotation error after the best global rotation and
  hand: :func:`rotation_error`, :func:`symmetric_pose_errors` (modulo the point group of the
  truth map), :func:`apply_pose_alignment`, :func:`flip_hand_poses`.
* :mod:`~cryospin.core.evaluation.point_group` - the point group (C1, Cn, Dn, pseudo-symmetry
  included) of a truth map: :func:`detect_point_group`; errors modulo it:
  :func:`pose_errors_modulo_group`.
* :mod:`~cryospin.core.evaluation.shift_error` - particle shifts under a map alignment with a 3D
  translation (:func:`align_shifts`: ``s' = s - (A' t)_xy``) and the shift error after the best
  global translation (:func:`shift_error`).
* :mod:`~cryospin.core.evaluation.align_maps` - rigid map alignment over SO(3) and the hand:
  :func:`align_maps`, :func:`apply_alignment` (re-exports the map utilities below).
* :mod:`~cryospin.core.evaluation.map_ops` - :func:`rotate_map`, :func:`flip_hand`,
  :func:`background_level`, :func:`real_space_correlation`, :func:`lowpass_gaussian`,
  :func:`translation_search`.
* :mod:`~cryospin.core.evaluation.align_search` - the search grid :func:`hopf_grid` and the
  resolution levels of the alignment.
* :mod:`~cryospin.core.evaluation.fsc_eval` - FSC against a truth (0.5) and between half-maps
  (0.143) after alignment, masked and unmasked: :func:`fsc_vs_truth`, :func:`half_map_fsc`.
* :mod:`~cryospin.core.evaluation.plots` - ``fsc.png``, the HEALPix orientation-distribution
  plot, the head-usage bar plot.
* :mod:`~cryospin.core.evaluation.outputs` - atomic writers: ``fsc.csv``, ``summary.json``.
* :mod:`~cryospin.core.evaluation.arrays` - :func:`as_numpy`, the numpy conversion of torch or
  array-like inputs that every module above uses.

Conventions: maps ``(D, D, D)`` ``[z, y, x]``; poses are RELION's ``A`` (map to image coordinates,
column vectors); the hand flip is ``z -> -z`` about the centre voxel ``D // 2``.
"""
