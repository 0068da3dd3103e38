"""Load pickle files (cryoDRGN ``.pkl``) without running code from them.

A plain :func:`pickle.load` calls whatever callable the file names (``os.system`` included), so a
crafted ``poses.pkl`` or ``ctf.pkl`` would run code. :func:`safe_load` uses an unpickler whose
``find_class`` accepts only what numpy arrays and scalars need to be rebuilt (numpy's
``_reconstruct``/``_frombuffer``/``scalar``, ``ndarray``, ``dtype`` and its per-type classes, and
``_codecs.encode`` for the latin-1 byte strings of protocol 2); tuples, lists, dicts, numbers and
strings need no callable at all. Any other global ends in :class:`UnsafePickleError` before
anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cryospin.core.errors import InputError

__all__ = ["UnsafePickleError", "numpy_array_globals", "safe_load", "safe_loads"]

_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 1 and numpy 2 spellings of one module
_core = getattr(np, "_core", None) or np.core


class UnsafePickleError(InputError):
    """A pickle file names a callable other than the numpy array machinery (refused, not run)."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to text codecs (protocol 2 stores bytes as latin-1 text)."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return codecs.encode(obj, encoding, errors)


def _allowed(module: str, name: str) -> Any:
    """Return the object a pickle may name as ``module.name``, or ``None`` when refused."""
    if module in ("numpy", "numpy.dtypes") and name == "ndarray":
        return np.ndarray
    if module == "numpy" and name == "dtype":
        return np.dtype
    if module == "numpy.dtypes" and name.endswith("DType"):
        cls = getattr(getattr(np, "dtypes", None), name, None)
        return cls if isinstance(cls, type) and issubclass(cls, np.dtype) else None
    if module in (f"{c}.multiarray" for c in _NUMPY_CORE) and name in ("_reconstruct", "scalar"):
        return getattr(_core.multiarray, name)
    if module in (f"{c}.numeric" for c in _NUMPY_CORE) and name == "_frombuffer":
        return _core.numeric._frombuffer
    if (module, name) == ("_codecs", "encode"):
        return _latin1_encode
    return None


def numpy_array_globals() -> list[Any]:
    """Return the callables/classes a pickled numpy array (any non-object dtype) refers to.

    Used as the allow-list of ``torch.load(weights_only=True)`` for checkpoints holding arrays.
    """
    dtype_classes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSUV"}
    return [np.ndarray, np.dtype, _core.multiarray._reconstruct, *sorted(dtype_classes, key=str)]


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :func:`_allowed`."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is None:
            raise UnsafePickleError(f"refers to {module}.{name}")
        return obj


def safe_loads(data: bytes, source: str = "pickle data") -> Any:
    """Unpickle ``data`` accepting only arrays, numpy scalars, tuples, lists, dicts, numbers, text.

    Raises:
        UnsafePickleError: the data names any other callable (``source`` is named in the message;
            nothing from the file was called).
        InputError: not a readable pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(
            f"{source}: refused to load: the pickle {exc} (only arrays, numbers, strings, "
            "tuples, lists and dicts are accepted; loading it could run code)"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{source}: not a readable pickle file ({exc})".splitlines()[0]) from None


def safe_load(path: str | Path) -> Any:
    """Read the pickle file ``path`` with :func:`safe_loads` (errors name the file)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return safe_loads(data, str(path))
