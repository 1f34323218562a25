"""Restricted unpickling for the pickled point-cloud files users download.

A pickle is a small program: loading one may call any importable function
(``os.system``, ``builtins.eval`` ...).  The preprocessed ModelNet40 ``.dat`` files and the
few-shot ``.pkl`` folds only hold containers (lists, tuples, dicts), numbers, strings and
numpy arrays, so :func:`safe_load_pickle` resolves exactly the globals numpy needs to
rebuild arrays and scalars and refuses everything else *before* it is called.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from typing import Any

__all__ = ["UnsafePickleError", "safe_load_pickle", "safe_loads_pickle", "ALLOWED_GLOBALS"]

# (module, name) pairs a pickle may reference.  numpy 1.x pickles name ``numpy.core``,
# numpy 2.x pickles name ``numpy._core``; protocol 5 uses ``_frombuffer``.  None of them can
# run code: they build arrays, dtypes, scalars or encode a string to bytes.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol <= 2 stores bytes (numpy array buffers)
    }
)


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle referenced a global that is not on the allow-list."""


def _resolve(module: str, name: str) -> Any:
    """Import an allowed global; ``numpy.core`` and ``numpy._core`` are interchangeable."""
    candidates = [module]
    if module.startswith("numpy.core."):
        candidates.insert(0, "numpy._core." + module[len("numpy.core.") :])
    elif module.startswith("numpy._core."):
        candidates.append("numpy.core." + module[len("numpy._core.") :])
    last_err: Exception | None = None
    for mod_name in candidates:
        try:
            return getattr(importlib.import_module(mod_name), name)
        except (ImportError, AttributeError) as err:
            last_err = err
    raise pickle.UnpicklingError(f"cannot resolve allowed global {module}.{name}: {last_err}")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only returns numpy array/scalar builders."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return _resolve(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to unpickle global '{module}.{name}'; only numpy "
            "arrays, numbers, strings and containers are allowed in data pickles "
            "(the file may be corrupt or malicious)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused persistent id {pid!r} in data pickle")


def safe_loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only numpy arrays, numbers, strings and containers.

    Args:
        data: the pickle bytes.
        source: a name for error messages (usually the file path).

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: (a ``ValueError``) when the pickle references any other global.
        ValueError: when the bytes are not a valid pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{source}: not a valid data pickle ({type(err).__name__}: {err})") from err


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a pickle file through the restricted unpickler (see :func:`safe_loads_pickle`).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        UnsafePickleError: when the pickle references a global outside the allow-list.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: pickle file not found")
    with open(path, "rb") as f:
        data = f.read()
    return safe_loads_pickle(data, source=path)
