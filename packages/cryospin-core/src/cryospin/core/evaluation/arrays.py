"""The one numpy conversion of the evaluation: torch tensors or array-likes to numpy arrays.

Kept free of a torch import (tensors are recognised by their ``detach`` method), so that the
light modules (:mod:`~cryospin.core.evaluation.outputs`) stay light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike


def as_numpy(x: Any, dtype: DTypeLike | None = None) -> np.ndarray:
    """Return ``x`` as a numpy array of its own shape, converted to ``dtype`` if given.

    A torch tensor (any device, with or without grad) is detached and copied to the CPU first;
    anything else goes through :func:`numpy.asarray`, so a numpy array of the right dtype comes
    back as it is, without a copy.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)
