"""Backend selection for the geometric ops (private).

``backend="auto"`` (the default everywhere) uses the compiled numba kernels for float32 /
float64 CPU tensors and the pure-torch path otherwise (other devices, other dtypes). The
environment variable ``ACT3D_OPS_BACKEND=torch|numba|auto`` changes the default; an
explicit ``backend=`` argument wins over it.
"""

from __future__ import annotations

import os

import torch

__all__: list[str] = []

_BACKENDS = ("auto", "torch", "numba")
_NUMBA_DTYPES = (torch.float32, torch.float64)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_backend(backend: str | None, x: torch.Tensor) -> str:
    """Return ``"torch"`` or ``"numba"`` for tensor ``x`` given a requested backend."""
    if backend is None:
        backend = os.environ.get("ACT3D_OPS_BACKEND", "auto")
        source = "ACT3D_OPS_BACKEND"
    else:
        source = "backend"
    if backend not in _BACKENDS:
        raise ValueError(f"{source} must be one of {_BACKENDS}, got {backend!r}")
    compiled = x.device.type == "cpu" and x.dtype in _NUMBA_DTYPES
    if backend == "auto":
        return "numba" if compiled and _numba_available() else "torch"
    if backend == "numba":
        if not compiled:
            raise ValueError(
                f"{source}='numba' needs float32/float64 CPU tensors, got {x.dtype} on {x.device}"
            )
        if not _numba_available():
            raise ValueError(f"{source}='numba' but numba is not installed")
    return backend
