"""Backend selection for the geometric ops (private).

``backend="auto"`` (the default everywhere) uses the compiled numba kernels for CPU tensors
and the pure-torch path on any other device. The environment variable
``ACT3D_OPS_BACKEND=torch|numba|auto`` changes the default; an explicit ``backend=``
argument wins over it.
"""

from __future__ import annotations

import os

import torch

__all__: list[str] = []

_BACKENDS = ("auto", "torch", "numba")


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
    if backend == "auto":
        return "numba" if x.device.type == "cpu" and _numba_available() else "torch"
    if backend == "numba":
        if x.device.type != "cpu":
            raise ValueError(f"{source}='numba' needs CPU tensors, got device {x.device}")
        if not _numba_available():
            raise ValueError(f"{source}='numba' but numba is not installed")
    return backend
