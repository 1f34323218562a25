"""Input checks shared by the geometric ops (private)."""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__: list[str] = []


def _check_cloud(x: torch.Tensor, name: str, dim: int | None = 3) -> None:
    """Raise ValueError unless ``x`` is a finite floating (B, N, dim) tensor with N >= 1."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        last = dim if dim else "C"
        raise ValueError(f"{name} must have shape (B, N, {last}), got {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {tuple(x.shape)}")
    if not _all_finite(x):
        raise ValueError(f"{name} contains NaN or inf values")


def _all_finite(x: torch.Tensor) -> bool:
    """True when x has no NaN/inf. On CPU numpy does the check: a parallel torch reduction
    would wake torch's OpenMP pool, whose spinning threads slow down the numba kernels that
    run next on the same cores."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(x.detach().numpy()).all())
    return bool(torch.isfinite(x).all())


def _check_same_batch(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same batch size, device and dtype."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_b} batch size {b.shape[0]} does not match {name_a} batch size {a.shape[0]}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}")
    if a.dtype != b.dtype:
        raise ValueError(f"{name_b} has dtype {b.dtype} but {name_a} has dtype {a.dtype}")


def _check_count(value: int, name: str, low: int, high: int, high_name: str) -> None:
    """Raise ValueError unless ``low <= value <= high`` and ``value`` is an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if value > high:
        raise ValueError(f"{name}={value} exceeds {high_name}={high}")
