"""Index-gathering of per-point values."""

from __future__ import annotations

import torch

__all__ = ["gather_points"]


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather per-point rows by index, batch-wise.

    Args:
        points: (B, N, C) values per point (any dtype).
        idx: (B, ...) int64 indices into the N axis.

    Returns:
        (B, ..., C) with ``out[b, i..., :] = points[b, idx[b, i...], :]``. Differentiable
        wrt ``points``.
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 3:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points must be a tensor of shape (B, N, C), got {shape}")
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64:
        dtype = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be an int64 tensor, got {dtype}")
    if idx.dim() < 1 or idx.shape[0] != points.shape[0]:
        raise ValueError(
            f"idx batch size must match points batch size {points.shape[0]}, "
            f"got shape {tuple(idx.shape)}"
        )
    if idx.device != points.device:
        raise ValueError(f"idx is on {idx.device} but points is on {points.device}")
    n = points.shape[1]
    if idx.numel() > 0:
        # numpy on CPU: a parallel torch reduction would wake (and leave spinning) torch's
        # OpenMP pool, which slows the numba kernels that usually run next.
        lo, hi = (
            (int(idx.min()), int(idx.max()))
            if idx.device.type != "cpu"
            else (int(idx.numpy().min()), int(idx.numpy().max()))
        )
        if lo < 0 or hi >= n:
            raise ValueError(f"idx values must lie in [0, {n}), got range [{lo}, {hi}]")
    return _gather(points, idx)


def _gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """gather_points without input checks (for indices produced by act3d.ops itself)."""
    b, _, c = points.shape
    flat = idx.reshape(b, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(b, flat.shape[1], c))
    return out.reshape(*idx.shape, c)
