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
            f"idx batch size must match points batch size {points.shape[0]}, got shape {tuple(idx.shape)}"
        )
    if idx.device != points.device:
        raise ValueError(f"idx is on {idx.device} but points is on {points.device}")
    b, n, c = points.shape
    flat = idx.reshape(b, -1)
    if flat.numel() > 0 and (bool((flat < 0).any()) or bool((flat >= n).any())):
        raise ValueError(f"idx values must lie in [0, {n}), got range [{int(flat.min())}, {int(flat.max())}]")
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(b, flat.shape[1], c))
    return out.reshape(*idx.shape, c)
