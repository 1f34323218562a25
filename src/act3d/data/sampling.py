"""Point sampling helpers: FPS on numpy arrays, pool sizes and the FPS cache.

The downstream protocol (ACT_SPEC §3) samples a training cloud by FPS to a slightly larger
*pool* (1200 points for 1024) and then takes a fresh random subset each epoch; a test
cloud is FPS to the input size.  FPS from a fixed start is a greedy sequence, so the first
``n`` points of the pool *are* the FPS to ``n``: one pool per shape serves both.  The pool
is computed once per shape and kept in memory and, optionally, in an on-disk cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable

import numpy as np

__all__ = ["fps_indices", "pool_size_for", "PoolCache", "file_signature"]

_KNOWN_POOLS = {1024: 1200, 2048: 2400, 4096: 4800, 8192: 8192}
_CACHE_VERSION = "act3d-pool-v1"


def fps_indices(points: np.ndarray, m: int, start: int = 0) -> np.ndarray:
    """Farthest point sampling on numpy arrays through :func:`act3d.ops.farthest_point_sample`.

    Args:
        points: (N, 3) or (B, N, 3) coordinates.
        m: number of points to pick (<= N).
        start: index of the first pick.

    Returns:
        (m,) or (B, m) int64 indices.
    """
    import torch

    from act3d.ops import farthest_point_sample

    arr = np.ascontiguousarray(points, dtype=np.float32)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"points must be (N, 3) or (B, N, 3), got {points.shape}")
    idx = farthest_point_sample(torch.from_numpy(arr), int(m), start=start).numpy()
    return idx[0] if single else idx


def pool_size_for(num_points: int, available: int) -> int:
    """Size of the FPS pool for ``num_points`` training points, capped at ``available``.

    1024 -> 1200, 2048 -> 2400, 4096 -> 4800, 8192 -> 8192 (the reference's table);
    other sizes get ``ceil(1.17 * num_points)``.
    """
    pool = _KNOWN_POOLS.get(num_points, math.ceil(num_points * 1.17))
    return max(num_points, min(pool, available))


def file_signature(path: str) -> str:
    """``path|mtime_ns|size`` of an existing file (the on-disk cache key's file part)."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_mtime_ns}|{st.st_size}"


class PoolCache:
    """Memory (and optional disk) cache of per-shape arrays, keyed by shape index.

    The disk key hashes a caller-provided string (file signature, item, pool size ...)
    with a version tag; entries are ``.npy`` files written atomically.

    Args:
        cache_dir: directory for ``.npy`` entries, or ``None`` for memory only.
        memory: keep computed arrays in memory as well.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, memory: bool = True) -> None:
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.memory = memory
        self._mem: dict[int, np.ndarray] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._mem

    def _path(self, key: str) -> str:
        digest = hashlib.sha1(f"{_CACHE_VERSION}|{key}".encode()).hexdigest()
        return os.path.join(self.cache_dir or "", digest[:2], digest + ".npy")

    def get(self, index: int, key: str | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``index`` or compute, store and return it.

        ``key`` is the disk-cache key (``None``: never use the disk for this entry).
        """
        hit = self._mem.get(index)
        if hit is not None:
            return hit
        arr = None
        disk = self.cache_dir is not None and key is not None
        if disk:
            arr = self._read(self._path(key))
        if arr is None:
            arr = compute()
            if disk:
                self._write(self._path(key), arr)
        if self.memory:
            self._mem[index] = arr
        return arr

    def put(self, index: int, key: str | None, arr: np.ndarray) -> None:
        """Store a computed array (used by batched pre-computation)."""
        if self.memory:
            self._mem[index] = arr
        if self.cache_dir is not None and key is not None:
            self._write(self._path(key), arr)

    def has_on_disk(self, key: str | None) -> bool:
        return self.cache_dir is not None and key is not None and os.path.isfile(self._path(key))

    @staticmethod
    def _read(path: str) -> np.ndarray | None:
        if not os.path.isfile(path):
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return None  # a corrupt entry is recomputed and overwritten

    @staticmethod
    def _write(path: str, arr: np.ndarray) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
