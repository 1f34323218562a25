"""Farthest point sampling (exact, deterministic)."""

from __future__ import annotations

import numbers

import torch

from ._backend import _resolve_backend
from ._validate import _check_cloud, _check_count

__all__ = ["farthest_point_sample", "farthest_point_sample_naive"]


def _sq_dist_to(points: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Squared distances, summed as (dx*dx + dy*dy) + dz*dz like the numba kernels.

    points: (B, N, 3), center: (B, 1, 3) -> (B, N)
    """
    d = points - center
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def _check_fps_args(points: torch.Tensor, m: int, start: int) -> None:
    _check_cloud(points, "points")
    n = points.shape[1]
    _check_count(m, "m", 1, n, "number of points N")
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or not 0 <= start < n:
        raise ValueError(f"start must be an int in [0, {n}), got {start!r}")


def _fps_torch(points: torch.Tensor, m: int, start: int) -> torch.Tensor:
    """Vectorised-over-batch FPS loop (the GPU path). points: (B, N, 3) -> (B, m)."""
    b, n, _ = points.shape
    idx = torch.empty(b, m, dtype=torch.int64, device=points.device)
    dist = torch.full((b, n), float("inf"), dtype=points.dtype, device=points.device)
    cur = torch.full((b,), start, dtype=torch.int64, device=points.device)
    arange_b = torch.arange(b, device=points.device)
    for i in range(m):
        idx[:, i] = cur
        center = points[arange_b, cur].unsqueeze(1)
        torch.minimum(dist, _sq_dist_to(points, center), out=dist)
        cur = torch.argmax(dist, dim=1)
    return idx


def farthest_point_sample(
    points: torch.Tensor, m: int, start: int = 0, backend: str | None = None
) -> torch.Tensor:
    """Exact farthest point sampling.

    The first index is ``start``; each next index is the point with the largest squared
    distance to the already chosen set (ties go to the lowest index). Deterministic.

    Args:
        points: (B, N, 3) float tensor.
        m: number of points to pick, 1 <= m <= N.
        start: index of the first pick (the ACT reference uses 0).
        backend: "auto" (numba on CPU, torch elsewhere), "torch" or "numba"; None reads
            ``ACT3D_OPS_BACKEND`` (default "auto").

    Returns:
        idx: (B, m) int64 indices into N.
    """
    _check_fps_args(points, m, start)
    return _fps(points, m, start, backend)


def _fps(points: torch.Tensor, m: int, start: int, backend: str | None) -> torch.Tensor:
    """farthest_point_sample without input checks."""
    if _resolve_backend(backend, points) == "numba":
        from ._numba_kernels import _fps_numba

        return _fps_numba(points.detach(), m, start)
    return _fps_torch(points.detach(), m, start)


def farthest_point_sample_naive(points: torch.Tensor, m: int, start: int = 0) -> torch.Tensor:
    """Plain reference FPS: one cloud at a time, textbook min-distance update.

    points: (B, N, 3) -> idx (B, m) int64. Same contract as ``farthest_point_sample``.
    """
    _check_fps_args(points, m, start)
    out = []
    for cloud in points.detach():
        chosen = [start]
        dist = torch.full((cloud.shape[0],), float("inf"), dtype=cloud.dtype, device=cloud.device)
        for _ in range(m - 1):
            d = _sq_dist_to(cloud[None], cloud[chosen[-1]][None, None])[0]
            dist = torch.minimum(dist, d)
            chosen.append(int(torch.argmax(dist)))
        out.append(torch.tensor(chosen, dtype=torch.int64, device=points.device))
    return torch.stack(out)
