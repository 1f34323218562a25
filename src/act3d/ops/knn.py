"""k nearest neighbours by squared Euclidean distance."""

from __future__ import annotations

import torch

from ._backend import _resolve_backend
from ._validate import _check_cloud, _check_count, _check_same_batch
from .gather import _gather

__all__ = ["knn", "knn_naive"]

# Number of (query, point) pairs per chunk of the torch path: bounds its temporary memory.
_TORCH_CHUNK_PAIRS = 1 << 24


def _check_knn_args(query: torch.Tensor, points: torch.Tensor, k: int) -> None:
    _check_cloud(query, "query")
    _check_cloud(points, "points")
    _check_same_batch(query, points, "query", "points")
    _check_count(k, "k", 1, points.shape[1], "number of points N")


def _pair_sq_dist(query: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Squared distances, summed as (dx*dx + dy*dy) + dz*dz like the numba kernels.

    query: (B, M, 3), neighbors: (B, M, k, 3) -> (B, M, k). Differentiable in both.
    """
    d = neighbors - query.unsqueeze(2)
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def _knn_idx_torch(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Candidate indices by chunked matmul distances + topk. (B, M, 3), (B, N, 3) -> (B, M, k)."""
    b, m, _ = query.shape
    n = points.shape[1]
    p_sq = (points * points).sum(-1).unsqueeze(1)  # (B, 1, N)
    chunk = max(1, _TORCH_CHUNK_PAIRS // max(1, b * n))
    out = []
    for s in range(0, m, chunk):
        q = query[:, s : s + chunk]
        d = torch.baddbmm(p_sq, q, points.transpose(1, 2), alpha=-2.0)  # (B, c, N) minus |q|^2
        out.append(torch.topk(d, k, dim=2, largest=False, sorted=False).indices)
    return torch.cat(out, dim=1)


def _sorted_by_dist(query: torch.Tensor, points: torch.Tensor, idx: torch.Tensor):
    """Exact dist2 by gather, then sort ascending (stable, ties keep lower index first)."""
    idx, _ = torch.sort(idx, dim=-1)
    dist2 = _pair_sq_dist(query, _gather(points, idx))
    order = torch.sort(dist2.detach(), dim=-1, stable=True).indices
    return torch.gather(dist2, -1, order), torch.gather(idx, -1, order)


def knn(
    query: torch.Tensor, points: torch.Tensor, k: int, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of each query point among ``points``.

    Neighbours are sorted by ascending squared distance, ties by ascending index (the
    torch backend may break exact ties at the k-th place differently). When autograd
    needs it, ``dist2`` is recomputed from the indices by gather, so it is differentiable
    wrt ``query`` and ``points``; otherwise the numba backend returns its own (identical)
    distances.

    Args:
        query: (B, M, 3) float tensor.
        points: (B, N, 3) float tensor, same dtype and device.
        k: number of neighbours, 1 <= k <= N.
        backend: "auto" (numba on CPU, torch elsewhere), "torch" or "numba"; None reads
            ``ACT3D_OPS_BACKEND``.

    Returns:
        dist2: (B, M, k) squared distances; idx: (B, M, k) int64 indices into N.
    """
    _check_knn_args(query, points, k)
    return _knn(query, points, k, backend)


def _knn(query: torch.Tensor, points: torch.Tensor, k: int, backend: str | None):
    """knn without input checks."""
    if _resolve_backend(backend, points) == "numba":
        from ._numba_kernels import _knn_numba

        dist2, idx = _knn_numba(query.detach(), points.detach(), k)
        if torch.is_grad_enabled() and (query.requires_grad or points.requires_grad):
            dist2 = _pair_sq_dist(query, _gather(points, idx))
        return dist2, idx
    idx = _knn_idx_torch(query.detach(), points.detach(), k)
    return _sorted_by_dist(query, points, idx)


def knn_naive(
    query: torch.Tensor, points: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain reference kNN: full (B, M, N) difference tensor, stable sort.

    query: (B, M, 3), points: (B, N, 3) -> dist2 (B, M, k), idx (B, M, k) int64.
    """
    _check_knn_args(query, points, k)
    diff = query[:, :, None, :] - points[:, None, :, :]
    d = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
    idx = torch.sort(d.detach(), dim=-1, stable=True).indices[..., :k]
    return torch.gather(d, -1, idx), idx
