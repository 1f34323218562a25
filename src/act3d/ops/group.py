"""Patch grouping: FPS centers + kNN neighbourhoods, relative to their center."""

from __future__ import annotations

import numpy as np
import torch

from ._validate import _check_cloud, _check_count
from .fps import _fps, farthest_point_sample_naive
from .gather import _gather
from .knn import _knn, knn_naive

__all__ = ["group", "group_with_index", "group_naive"]


def _check_group_args(points: torch.Tensor, num_groups: int, group_size: int) -> None:
    _check_cloud(points, "points")
    n = points.shape[1]
    _check_count(num_groups, "num_groups", 1, n, "number of points N")
    _check_count(group_size, "group_size", 1, n, "number of points N")


def group_with_index(
    points: torch.Tensor, num_groups: int, group_size: int, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut clouds into patches and also return the indices used.

    FPS (starting at index 0) picks ``num_groups`` centers; the ``group_size`` nearest
    points of each center (the center itself included, nearest first) form its patch,
    expressed relative to the center. Differentiable wrt ``points``.

    Args:
        points: (B, N, 3) float tensor.
        num_groups: G, 1 <= G <= N.
        group_size: k, 1 <= k <= N.
        backend: "auto", "torch" or "numba" (see ``knn``); None reads ``ACT3D_OPS_BACKEND``.

    Returns:
        patches: (B, G, k, 3) neighbours minus their center;
        centers: (B, G, 3);
        center_idx: (B, G) int64 indices of the centers into N;
        neighbor_idx: (B, G, k) int64 indices of the patch points into N.
    """
    _check_group_args(points, num_groups, group_size)
    center_idx = _fps(points, num_groups, 0, backend)
    if points.device.type == "cpu" and not (torch.is_grad_enabled() and points.requires_grad):
        # numpy gathers: torch ops here would wake torch's thread pool between the kernels
        pts = points.detach().numpy()
        centers_np = np.take_along_axis(pts, center_idx.numpy()[..., None], axis=1)
        centers = torch.from_numpy(centers_np)
        _, neighbor_idx = _knn(centers, points.detach(), group_size, backend)
        b, g, k = neighbor_idx.shape
        flat = neighbor_idx.numpy().reshape(b, g * k, 1)
        patches_np = np.take_along_axis(pts, flat, axis=1).reshape(b, g, k, 3)
        patches = torch.from_numpy(patches_np - centers_np[:, :, None])
        return patches, centers, center_idx, neighbor_idx
    centers = _gather(points, center_idx)
    _, neighbor_idx = _knn(centers.detach(), points.detach(), group_size, backend)
    patches = _gather(points, neighbor_idx) - centers.unsqueeze(2)
    return patches, centers, center_idx, neighbor_idx


def group(
    points: torch.Tensor, num_groups: int, group_size: int, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut clouds into patches (see ``group_with_index``).

    points: (B, N, 3) -> patches (B, G, k, 3) relative to their centers, centers (B, G, 3).
    """
    patches, centers, _, _ = group_with_index(points, num_groups, group_size, backend=backend)
    return patches, centers


def group_naive(
    points: torch.Tensor, num_groups: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain reference grouping from ``farthest_point_sample_naive`` and ``knn_naive``.

    points: (B, N, 3) -> patches (B, G, k, 3), centers (B, G, 3).
    """
    _check_group_args(points, num_groups, group_size)
    center_idx = farthest_point_sample_naive(points, num_groups, 0)
    centers = _gather(points, center_idx)
    _, neighbor_idx = knn_naive(centers, points, group_size)
    return _gather(points, neighbor_idx) - centers.unsqueeze(2), centers
