"""The evaluation's one numpy conversion (:func:`cryospin.core.evaluation.arrays.as_numpy`)."""

from __future__ import annotations

import numpy as np
import torch

from cryospin.core.evaluation.arrays import as_numpy


def test_tensor_with_grad_becomes_its_values() -> None:
    t = (torch.arange(12, dtype=torch.float32).reshape(3, 4) / 8).requires_grad_()
    expected = np.arange(12).reshape(3, 4) / 8  # exact in float32
    out = as_numpy(t * 2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, 2 * expected)
    wide = as_numpy(t, np.float64)
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide, expected)


def test_arrays_pass_through_and_lists_convert() -> None:
    a = np.arange(6.0).reshape(2, 3)
    assert as_numpy(a) is a  # no copy of an array that already fits
    assert np.shares_memory(as_numpy(a, np.float64), a)
    out = as_numpy([[1, 2], [3, 4]], np.float64)
    assert out.dtype == np.float64 and out.tolist() == [[1.0, 2.0], [3.0, 4.0]]
