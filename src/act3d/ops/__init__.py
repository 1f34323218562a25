"""Geometric ops for point clouds: FPS, kNN, grouping, Chamfer distance, masking.

Every fast op has a plain ``*_naive`` reference beside it. On CPU tensors the fast ops run
compiled numba kernels (indices only; distances and gradients come from torch gathers);
on other devices, or with ``backend="torch"`` / ``ACT3D_OPS_BACKEND=torch``, they run a
pure-torch path.
"""

from .chamfer import chamfer_distance, chamfer_distance_naive
from .fps import farthest_point_sample, farthest_point_sample_naive
from .gather import gather_points
from .group import group, group_naive, group_with_index
from .knn import knn, knn_naive
from .mask import random_mask

__all__ = [
    "chamfer_distance",
    "chamfer_distance_naive",
    "farthest_point_sample",
    "farthest_point_sample_naive",
    "gather_points",
    "group",
    "group_naive",
    "group_with_index",
    "knn",
    "knn_naive",
    "random_mask",
]
