"""Compiled CPU kernels (numba) for the geometric ops (private).

The kernels are exact: they return the same indices as brute force, ties broken by the
lowest original point index. Callers recompute distances with torch gathers when autograd
needs them.

Blocks. Each cloud is sorted along a Morton (z-order) curve (a counting sort on a coarse
grid) and cut into leaves of ``leaf`` consecutive points, stored coordinate-major with
tight bounding boxes; groups of ``group`` consecutive leaves have boxes too. A box is
skipped when the squared distance from the query to it cannot beat the value that
matters:
- FPS: each box keeps the maximum of its points' current min-distances; a box whose bound
  to the new center is >= that maximum cannot change (QuickFPS-style pruning).
- kNN: nearest-first search (groups, then leaves, in order of their bound), boxes
  beyond the current k-th distance are skipped.
- 1-NN (Chamfer): queries are visited in Morton order and each search starts from the
  previous query's nearest point, a real candidate, so most boxes are skipped at once.

Exactness of skipping. Squared distances are computed as (dx*dx + dy*dy) + dz*dz in the
input dtype with ``fastmath`` off, exactly like the torch paths (bit-identical values).
The box bound uses the same formula on the per-axis gaps (0 inside the box). IEEE
rounding is monotonic, so every point's computed distance is >= its box's computed bound
and a skip never changes a result (boxes are skipped only when the bound is strictly
beyond the k-th distance, so equal distances still compete on their index).

Threads. Kernels release the GIL (``nogil``); the Python wrappers cut the work into
chunks run on a small thread pool of ``torch.get_num_threads()`` workers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

__all__: list[str] = []

# Leaf block sizes (points per block) of the kd partition, per op.
_FPS_LEAF = 32
_KNN_LEAF = 32
_NN_LEAF = 16
# Leaves per group (the second level of boxes).
_GROUP = 8
# Queries per work item of the kNN / 1-NN kernels (a work item never spans two clouds).
_QUERY_BLOCK = 64
# Work is cut into this many chunks per thread, handed out dynamically.
_CHUNKS_PER_THREAD = 4
# Jobs estimated below this many seconds (single thread) run on the calling thread only.
_MIN_PARALLEL_S = 3e-3

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


@njit(cache=True, nogil=True)
def _spread3(v):  # pragma: no cover - compiled
    """Spread the low 10 bits of v so that two zero bits separate consecutive bits."""
    v &= 0x3FF
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    v = (v | (v << 2)) & 0x09249249
    return v


@njit(cache=True, nogil=True)
def _build_blocks(pts, leaf, bits, xs, perm, box, code, count):  # pragma: no cover - compiled
    """Blocks of one cloud: Morton (z-order) sort on a 2**bits grid, then runs of ``leaf``.

    pts: (N, 3) -> xs (3, N) coordinates in block order, perm (N,) original indices,
    box (6, nb) per-block lo (rows 0-2) and hi (rows 3-5). code (N,) and count
    (8**bits + 1,) are int64 scratch. Counting sort: O(N + 8**bits), stable.
    """
    n = pts.shape[0]
    lo0 = pts[0, 0]
    lo1 = pts[0, 1]
    lo2 = pts[0, 2]
    hi0 = lo0
    hi1 = lo1
    hi2 = lo2
    for i in range(1, n):
        v = pts[i, 0]
        lo0 = v if v < lo0 else lo0
        hi0 = v if v > hi0 else hi0
        v = pts[i, 1]
        lo1 = v if v < lo1 else lo1
        hi1 = v if v > hi1 else hi1
        v = pts[i, 2]
        lo2 = v if v < lo2 else lo2
        hi2 = v if v > hi2 else hi2
    ext = max(hi0 - lo0, hi1 - lo1, hi2 - lo2)
    cells = 1 << bits
    scale = cells / ext if ext > 0 else 0.0
    count[:] = 0
    for i in range(n):
        c0 = min(int((pts[i, 0] - lo0) * scale), cells - 1)
        c1 = min(int((pts[i, 1] - lo1) * scale), cells - 1)
        c2 = min(int((pts[i, 2] - lo2) * scale), cells - 1)
        c = _spread3(c0) | (_spread3(c1) << 1) | (_spread3(c2) << 2)
        code[i] = c
        count[c + 1] += 1
    for c in range(1, count.shape[0]):
        count[c] += count[c - 1]
    for i in range(n):
        c = code[i]
        j = count[c]
        count[c] = j + 1
        perm[j] = i
        xs[0, j] = pts[i, 0]
        xs[1, j] = pts[i, 1]
        xs[2, j] = pts[i, 2]
    nb = box.shape[1]
    for blk in range(nb):
        s = blk * leaf
        e = min(s + leaf, n)
        for a in range(3):
            v0 = xs[a, s]
            v1 = v0
            for i in range(s + 1, e):
                v = xs[a, i]
                v0 = v if v < v0 else v0
                v1 = v if v > v1 else v1
            box[a, blk] = v0
            box[3 + a, blk] = v1


@njit(cache=True, nogil=True)
def _box_bounds(box, cx, cy, cz, out):  # pragma: no cover - compiled
    """Squared distance lower bounds from (cx, cy, cz) to every box (6, nb) -> out (nb,)."""
    for j in range(out.shape[0]):
        out[j] = _box_bound(box, j, cx, cy, cz)


@njit(cache=True, nogil=True)
def _box_bound(box, j, cx, cy, cz):  # pragma: no cover - compiled
    """Squared distance from (cx, cy, cz) to box j of box (6, nb), summed like the points."""
    zero = cx - cx
    gx = box[0, j] - cx
    t = cx - box[3, j]
    gx = t if t > gx else gx
    gx = gx if gx > zero else zero
    gy = box[1, j] - cy
    t = cy - box[4, j]
    gy = t if t > gy else gy
    gy = gy if gy > zero else zero
    gz = box[2, j] - cz
    t = cz - box[5, j]
    gz = t if t > gz else gz
    gz = gz if gz > zero else zero
    return gx * gx + gy * gy + gz * gz


@njit(cache=True, nogil=True)
def _super_boxes(box, group, sbox):  # pragma: no cover - compiled
    """Boxes of groups of ``group`` consecutive leaf boxes: box (6, nb) -> sbox (6, ns)."""
    nb = box.shape[1]
    for s in range(sbox.shape[1]):
        l0 = s * group
        l1 = min(l0 + group, nb)
        for a in range(3):
            v0 = box[a, l0]
            v1 = box[3 + a, l0]
            for blk in range(l0 + 1, l1):
                v = box[a, blk]
                v0 = v if v < v0 else v0
                v = box[3 + a, blk]
                v1 = v if v > v1 else v1
            sbox[a, s] = v0
            sbox[3 + a, s] = v1


@njit(cache=True, nogil=True)
def _fps_range(pts, m, start, leaf, group, bits, b0, b1, out):  # pragma: no cover - compiled
    """Exact FPS of clouds b0:b1 of pts (B, N, 3) into out (B, m) int64.

    Two levels of boxes: leaves of ``leaf`` points and groups of ``group`` leaves. Each
    keeps the exact maximum of its points' current distances; a box is skipped when its
    bound to the new center is >= that maximum (no distance in it can decrease).
    """
    n = pts.shape[1]
    nb = (n + leaf - 1) // leaf
    ns = (nb + group - 1) // group
    xs = np.empty((3, n), dtype=pts.dtype)
    perm = np.empty(n, dtype=np.int64)
    box = np.empty((6, nb), dtype=pts.dtype)
    sbox = np.empty((6, ns), dtype=pts.dtype)
    code = np.empty(n, dtype=np.int64)
    count = np.empty((1 << (3 * bits)) + 1, dtype=np.int64)
    dist = np.empty(n, dtype=pts.dtype)
    bmax = np.empty(nb, dtype=pts.dtype)
    smax = np.empty(ns, dtype=pts.dtype)
    sbounds = np.empty(ns, dtype=pts.dtype)
    for b in range(b0, b1):
        _build_blocks(pts[b], leaf, bits, xs, perm, box, code, count)
        _super_boxes(box, group, sbox)
        x = xs[0]
        y = xs[1]
        z = xs[2]
        dist[:] = np.inf
        bmax[:] = np.inf
        smax[:] = np.inf
        cur = start
        for i in range(m):
            out[b, i] = cur
            cx = pts[b, cur, 0]
            cy = pts[b, cur, 1]
            cz = pts[b, cur, 2]
            _box_bounds(sbox, cx, cy, cz, sbounds)
            for s in range(ns):
                if sbounds[s] >= smax[s]:
                    continue
                l0 = s * group
                l1 = min(l0 + group, nb)
                for blk in range(l0, l1):
                    if _box_bound(box, blk, cx, cy, cz) >= bmax[blk]:
                        continue
                    j0 = blk * leaf
                    j1 = min(j0 + leaf, n)
                    for j in range(j0, j1):
                        dx = x[j] - cx
                        dy = y[j] - cy
                        dz = z[j] - cz
                        d = dx * dx + dy * dy + dz * dz
                        v = dist[j]
                        dist[j] = d if d < v else v
                    v = dist[j0]
                    for j in range(j0 + 1, j1):
                        w = dist[j]
                        v = w if w > v else v
                    bmax[blk] = v
                v = bmax[l0]
                for blk in range(l0 + 1, l1):
                    w = bmax[blk]
                    v = w if w > v else v
                smax[s] = v
            best = smax[0]
            for s in range(1, ns):
                w = smax[s]
                best = w if w > best else best
            cur = n
            for s in range(ns):
                if smax[s] != best:
                    continue
                for blk in range(s * group, min(s * group + group, nb)):
                    if bmax[blk] != best:
                        continue
                    for j in range(blk * leaf, min(blk * leaf + leaf, n)):
                        if dist[j] == best and perm[j] < cur:
                            cur = perm[j]
    return out


@njit(cache=True, nogil=True)
def _build_range(pts, leaf, group, bits, b0, b1, xs, perm, box, sbox):  # pragma: no cover
    """Blocks of clouds b0:b1 of pts (B, N, 3): xs (B, 3, N), perm (B, N), box (B, 6, nb),
    sbox (B, 6, ns)."""
    code = np.empty(pts.shape[1], dtype=np.int64)
    count = np.empty((1 << (3 * bits)) + 1, dtype=np.int64)
    for b in range(b0, b1):
        _build_blocks(pts[b], leaf, bits, xs[b], perm[b], box[b], code, count)
        _super_boxes(box[b], group, sbox[b])


@njit(cache=True, nogil=True)
def _nearest_leaf(box, sbox, group, cx, cy, cz):  # pragma: no cover - compiled
    """Leaf with the smallest bound inside the group with the smallest bound."""
    nb = box.shape[1]
    first = 0
    fb = _box_bound(sbox, 0, cx, cy, cz)
    for s in range(1, sbox.shape[1]):
        v = _box_bound(sbox, s, cx, cy, cz)
        if v < fb:
            fb = v
            first = s
    leaf_best = first * group
    lb = _box_bound(box, leaf_best, cx, cy, cz)
    for blk in range(first * group + 1, min(first * group + group, nb)):
        v = _box_bound(box, blk, cx, cy, cz)
        if v < lb:
            lb = v
            leaf_best = blk
    return leaf_best


@njit(cache=True, nogil=True)
def _knn_leaf(x, y, z, pb, j0, j1, cx, cy, cz, k, kd, ki, cnt, tmp):  # pragma: no cover
    """Offer points j0:j1 to the sorted top-k (kd, ki) holding cnt entries; returns cnt.

    Entries are sorted by (distance, original index), so ties keep the lower index.
    Distances go to ``tmp`` first (a vectorised loop); a leaf with no point within the
    current k-th distance is done after that.
    """
    hits = 0
    thr = kd[k - 1]
    for j in range(j0, j1):
        dx = x[j] - cx
        dy = y[j] - cy
        dz = z[j] - cz
        d = dx * dx + dy * dy + dz * dz
        tmp[j - j0] = d
        hits += 1 if d <= thr else 0
    if cnt == k and hits == 0:
        return cnt
    for j in range(j0, j1):
        d = tmp[j - j0]
        o = pb[j]
        if cnt == k:
            if d > kd[k - 1] or (d == kd[k - 1] and o > ki[k - 1]):
                continue
            p = k - 1
        else:
            p = cnt
            cnt += 1
        while p > 0 and (kd[p - 1] > d or (kd[p - 1] == d and ki[p - 1] > o)):
            kd[p] = kd[p - 1]
            ki[p] = ki[p - 1]
            p -= 1
        kd[p] = d
        ki[p] = o
    return cnt


@njit(cache=True, nogil=True)
def _sorted_boxes(box, b0, b1, cx, cy, cz, thr, skip, ids, bnd):  # pragma: no cover
    """Boxes b0:b1 (except ``skip``) with bound <= thr into ids/bnd, sorted by bound."""
    cnt = 0
    for blk in range(b0, b1):
        if blk == skip:
            continue
        v = _box_bound(box, blk, cx, cy, cz)
        if v > thr:
            continue
        p = cnt
        cnt += 1
        while p > 0 and bnd[p - 1] > v:
            bnd[p] = bnd[p - 1]
            ids[p] = ids[p - 1]
            p -= 1
        bnd[p] = v
        ids[p] = blk
    return cnt


@njit(cache=True, nogil=True)
def _knn_range(q, xs, perm, box, sbox, leaf, group, k, block, t0, t1, out, outd):  # pragma: no cover
    """kNN for work items t0:t1 (cloud b, run of queries) of q (B, M, 3) into out (B, M, k)
    int64 indices and outd (B, M, k) squared distances.

    Nearest-first search: groups in order of their bound (the nearest first), inside
    each group the leaves in order of their bound; a box is skipped once its bound
    exceeds the current k-th distance. Neighbours are sorted by (distance, original
    index), the order of a stable sort.
    """
    nq = q.shape[1]
    n = xs.shape[2]
    nb = box.shape[2]
    ns = sbox.shape[2]
    nblk = (nq + block - 1) // block
    kd = np.empty(k, dtype=q.dtype)
    ki = np.empty(k, dtype=np.int64)
    sids = np.empty(ns, dtype=np.int64)
    sbnd = np.empty(ns, dtype=q.dtype)
    lids = np.empty(group, dtype=np.int64)
    lbnd = np.empty(group, dtype=q.dtype)
    tmp = np.empty(leaf, dtype=q.dtype)
    for t in range(t0, t1):
        b = t // nblk
        q0 = (t % nblk) * block
        q1 = min(q0 + block, nq)
        x = xs[b, 0]
        y = xs[b, 1]
        z = xs[b, 2]
        pb = perm[b]
        bb = box[b]
        sb = sbox[b]
        for qi in range(q0, q1):
            kd[k - 1] = np.inf
            cx = q[b, qi, 0]
            cy = q[b, qi, 1]
            cz = q[b, qi, 2]
            first = 0
            fb = _box_bound(sb, 0, cx, cy, cz)
            for s in range(1, ns):
                v = _box_bound(sb, s, cx, cy, cz)
                if v < fb:
                    fb = v
                    first = s
            cnt = 0
            nsel = 1
            sids[0] = first
            i = 0
            while i < nsel:
                s = sids[i]
                thr = kd[k - 1] if cnt == k else np.inf
                if i > 0 and sbnd[i] > thr:
                    break
                l0 = s * group
                l1 = min(l0 + group, nb)
                nl = _sorted_boxes(bb, l0, l1, cx, cy, cz, thr, -1, lids, lbnd)
                for li in range(nl):
                    if cnt == k and lbnd[li] > kd[k - 1]:
                        break
                    blk = lids[li]
                    j0 = blk * leaf
                    j1 = min(j0 + leaf, n)
                    cnt = _knn_leaf(x, y, z, pb, j0, j1, cx, cy, cz, k, kd, ki, cnt, tmp)
                if i == 0:
                    thr = kd[k - 1] if cnt == k else np.inf
                    nsel = 1 + _sorted_boxes(sb, 0, ns, cx, cy, cz, thr, first, sids[1:], sbnd[1:])
                i += 1
            for i in range(k):
                out[b, qi, i] = ki[i]
                outd[b, qi, i] = kd[i]
    return out


@njit(cache=True, nogil=True)
def _nn_range(qs, qperm, xs, perm, box, sbox, leaf, group, block, t0, t1, out):  # pragma: no cover
    """1-NN for work items t0:t1 into out (B, M) int64 (lowest index on ties).

    qs: (B, 3, M) queries in Morton order, qperm: (B, M) their original indices. The
    search starts from the previous query's nearest point (a real candidate), so most
    boxes are skipped at once.
    """
    nq = qs.shape[2]
    n = xs.shape[2]
    nb = box.shape[2]
    ns = sbox.shape[2]
    nblk = (nq + block - 1) // block
    for t in range(t0, t1):
        b = t // nblk
        q0 = (t % nblk) * block
        q1 = min(q0 + block, nq)
        x = xs[b, 0]
        y = xs[b, 1]
        z = xs[b, 2]
        pb = perm[b]
        bb = box[b]
        sb = sbox[b]
        best_j = 0
        for qi in range(q0, q1):
            cx = qs[b, 0, qi]
            cy = qs[b, 1, qi]
            cz = qs[b, 2, qi]
            if qi == q0:
                best_j = _nearest_leaf(bb, sb, group, cx, cy, cz) * leaf
            dx = x[best_j] - cx
            dy = y[best_j] - cy
            dz = z[best_j] - cz
            best = dx * dx + dy * dy + dz * dz
            best_o = pb[best_j]
            for s in range(ns):
                if _box_bound(sb, s, cx, cy, cz) > best:
                    continue
                for blk in range(s * group, min(s * group + group, nb)):
                    if _box_bound(bb, blk, cx, cy, cz) > best:
                        continue
                    for j in range(blk * leaf, min(blk * leaf + leaf, n)):
                        dx = x[j] - cx
                        dy = y[j] - cy
                        dz = z[j] - cz
                        d = dx * dx + dy * dy + dz * dz
                        if d < best or (d == best and pb[j] < best_o):
                            best = d
                            best_o = pb[j]
                            best_j = j
            out[b, qperm[b, qi]] = best_o
    return out


@njit(cache=True, nogil=True)
def _chamfer_range(a, b, idx_ab, idx_ba, norm, want_grad, b0, b1, val, ga, gb):  # pragma: no cover
    """Chamfer value and its gradients for clouds b0:b1, given the nearest-neighbour indices.

    a: (B, N, 3), b: (B, M, 3); idx_ab: (B, N), idx_ba: (B, M). val: (B,) float64;
    ga, gb: gradients of val[c] wrt a[c], b[c] (written only when want_grad). Sums are
    accumulated in float64. For CD-L1 a zero distance contributes gradient 0.
    """
    n = a.shape[1]
    m = b.shape[1]
    ca = 0.5 / n if norm == 1 else 1.0 / n
    cb = 0.5 / m if norm == 1 else 1.0 / m
    for c in range(b0, b1):
        if want_grad:
            ga[c] = 0
            gb[c] = 0
        for src, dst, idx, gs, gd, coef, slot in (
            (a, b, idx_ab, ga, gb, ca, 0),
            (b, a, idx_ba, gb, ga, cb, 1),
        ):
            total = 0.0
            for i in range(src.shape[1]):
                j = idx[c, i]
                dx = src[c, i, 0] - dst[c, j, 0]
                dy = src[c, i, 1] - dst[c, j, 1]
                dz = src[c, i, 2] - dst[c, j, 2]
                d = dx * dx + dy * dy + dz * dz
                if norm == 1:
                    r = np.sqrt(d)
                    total += r
                    w = coef / r if d > 0 else 0.0
                else:
                    total += d
                    w = 2.0 * coef
                if want_grad:
                    gs[c, i, 0] += w * dx
                    gs[c, i, 1] += w * dy
                    gs[c, i, 2] += w * dz
                    gd[c, j, 0] -= w * dx
                    gd[c, j, 1] -= w * dy
                    gd[c, j, 2] -= w * dz
            if slot == 0:
                val[c] = total * coef
            else:
                val[c] += total * coef


def _run_split(fn, total: int, cost_s: float = float("inf")) -> None:
    """Call fn(t0, t1) over [0, total) in contiguous chunks, on ``torch.get_num_threads()``
    threads (the calling thread included).

    ``cost_s`` is a rough single-thread estimate of the whole job; below
    _MIN_PARALLEL_S it runs on the calling thread alone (handing work to other threads
    costs more than it saves on a small job, much more on a busy machine).

    The kernels release the GIL, so a small thread pool (created on first use) runs them
    in parallel. There are a few chunks per thread, taken from a shared counter, so a
    thread that the OS delays (a busy machine) does not hold up the whole call.
    """
    threads = max(1, min(torch.get_num_threads(), total))
    if threads == 1 or cost_s < _MIN_PARALLEL_S:
        fn(0, total)
        return
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="act3d-ops")
            _pool_size = threads - 1
        pool = _pool
    chunks = min(total, _CHUNKS_PER_THREAD * threads)
    edges = np.linspace(0, total, chunks + 1).astype(np.int64).tolist()
    counter = iter(range(chunks))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            fn(edges[i], edges[i + 1])

    futures = [pool.submit(worker) for _ in range(threads - 1)]
    worker()
    for f in futures:
        f.result()


def _np(x: torch.Tensor) -> np.ndarray:
    """CPU tensor -> C-contiguous numpy array (no copy when already contiguous)."""
    return np.ascontiguousarray(x.numpy())


def _grid_bits(n: int) -> int:
    """Bits per axis of the Morton grid: about 2 points per cell, 2..6 bits."""
    return int(min(6, max(2, np.ceil(np.log2(max(n, 1) / 2) / 3))))


def _blocks(points: np.ndarray, leaf: int, group: int):
    """Blocks of every cloud: points (B, N, 3) -> xs (B, 3, N), perm (B, N), box (B, 6, nb),
    sbox (B, 6, ns)."""
    nbatch, n, _ = points.shape
    nb = (n + leaf - 1) // leaf
    ns = (nb + group - 1) // group
    bits = _grid_bits(n)
    xs = np.empty((nbatch, 3, n), dtype=points.dtype)
    perm = np.empty((nbatch, n), dtype=np.int64)
    box = np.empty((nbatch, 6, nb), dtype=points.dtype)
    sbox = np.empty((nbatch, 6, ns), dtype=points.dtype)
    _run_split(
        lambda b0, b1: _build_range(points, leaf, group, bits, b0, b1, xs, perm, box, sbox),
        nbatch,
    )
    return xs, perm, box, sbox


def _fps_numba(points: torch.Tensor, m: int, start: int) -> torch.Tensor:
    """points: (B, N, 3) CPU float -> (B, m) int64."""
    pts = _np(points)
    out = np.empty((pts.shape[0], m), dtype=np.int64)
    bits = _grid_bits(pts.shape[1])
    # measured on a 2-core Xeon: ~10 ns per point to sort, ~1 us per pick and cloud
    cost_s = pts.shape[0] * (pts.shape[1] * 1e-8 + m * 1e-6)
    _run_split(
        lambda b0, b1: _fps_range(pts, m, start, _FPS_LEAF, _GROUP, bits, b0, b1, out),
        pts.shape[0],
        cost_s,
    )
    return torch.from_numpy(out)


def _work_items(nbatch: int, nq: int) -> int:
    return nbatch * ((nq + _QUERY_BLOCK - 1) // _QUERY_BLOCK)


def _knn_numba(
    query: torch.Tensor, points: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """query: (B, M, 3), points: (B, N, 3) CPU float -> dist2 (B, M, k), idx (B, M, k) int64."""
    q = _np(query)
    out = np.empty((q.shape[0], q.shape[1], k), dtype=np.int64)
    outd = np.empty((q.shape[0], q.shape[1], k), dtype=q.dtype)
    blocks = _blocks(_np(points), _KNN_LEAF, _GROUP)
    _run_split(
        lambda t0, t1: _knn_range(
            q, *blocks, _KNN_LEAF, _GROUP, k, _QUERY_BLOCK, t0, t1, out, outd
        ),
        _work_items(q.shape[0], q.shape[1]),
    )
    return torch.from_numpy(outd), torch.from_numpy(out)


def _nn_idx_numba(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour indices both ways: (B, N, 3), (B, M, 3) -> (B, N), (B, M) int64."""
    blocks_a = _blocks(_np(a), _NN_LEAF, _GROUP)
    blocks_b = _blocks(_np(b), _NN_LEAF, _GROUP)
    out_ab = np.empty(a.shape[:2], dtype=np.int64)
    out_ba = np.empty(b.shape[:2], dtype=np.int64)
    for queries, points, out in ((blocks_a, blocks_b, out_ab), (blocks_b, blocks_a, out_ba)):
        _run_split(
            lambda t0, t1: _nn_range(
                queries[0], queries[1], *points, _NN_LEAF, _GROUP, _QUERY_BLOCK, t0, t1, out
            ),
            _work_items(out.shape[0], out.shape[1]),
        )
    return torch.from_numpy(out_ab), torch.from_numpy(out_ba)


def _chamfer_numba(
    a: torch.Tensor, b: torch.Tensor, norm: int, want_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-cloud Chamfer values (B,) and, when want_grad, their gradients wrt a and b."""
    idx_ab, idx_ba = _nn_idx_numba(a, b)
    a_np = _np(a)
    b_np = _np(b)
    val = np.empty(a_np.shape[0], dtype=np.float64)
    ga = np.empty(a_np.shape if want_grad else (0, 0, 3), dtype=a_np.dtype)
    gb = np.empty(b_np.shape if want_grad else (0, 0, 3), dtype=b_np.dtype)
    ia = idx_ab.numpy()
    ib = idx_ba.numpy()
    _run_split(
        lambda b0, b1: _chamfer_range(a_np, b_np, ia, ib, norm, want_grad, b0, b1, val, ga, gb),
        a_np.shape[0],
    )
    values = torch.from_numpy(val.astype(a_np.dtype))
    if not want_grad:
        return values, None, None
    return values, torch.from_numpy(ga), torch.from_numpy(gb)
