"""Benchmark act3d.ops against the naive references and the installed CPU libraries.

Times (median of --repeats runs after one warm-up run) farthest point sampling, kNN,
grouping and Chamfer distance (forward + backward) for:

- act3d, CPU fast path (numba kernels; ``backend="numba"``),
- act3d, pure-torch path (``backend="torch"``, the GPU path, here on CPU),
- the plain ``*_naive`` references,
- fpsample, point-cloud-utils, scipy cKDTree and open3d, each when installed.

Library calls take one cloud at a time; they run over the batch on a thread pool of
--threads workers (the same thread count act3d gets), so the comparison is like for like.
Prints a markdown report: machine, settings, the table of medians (wall time, and process
CPU time summed over threads, which a busy machine disturbs less), and the ratio fastest
library / act3d (> 1 means act3d is faster).

    python benchmarks/ops.py [--threads 2] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from act3d import ops  # noqa: E402

# Naive references above this many (query, point) pairs per call are run one cloud at a
# time (their full difference tensor would not fit in memory otherwise).
_NAIVE_PAIRS_PER_CALL = 1 << 25
# Seconds of timed runs allowed per entry (slow entries get fewer than --repeats runs).
_SLOW_BUDGET_S = 20.0


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (all threads) in seconds of fn().

    One warm-up run first. Slow entries (the naive references, the torch path on CPU) get
    fewer runs: at most about _SLOW_BUDGET_S seconds of timed runs, and at least one.
    """
    start = time.perf_counter()
    fn()
    warm = time.perf_counter() - start
    runs = max(1, min(repeats, int(_SLOW_BUDGET_S / max(warm, 1e-9))))
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


class _Libraries:
    """Optional third-party implementations, each None when not installed."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.threads = threads
        self.fpsample = _try_import("fpsample")
        self.pcu = _try_import("point_cloud_utils")
        self.spatial = _try_import("scipy.spatial")
        self.o3d = _try_import("open3d")

    def map(self, fn: Callable[[int], object], batch: int) -> list:
        return list(self.pool.map(fn, range(batch)))


def _try_import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # a broken install (missing shared library) counts as missing
        return None


def _naive_in_chunks(fn: Callable, *tensors: torch.Tensor, pairs: int) -> Callable[[], object]:
    """Run a naive op on the whole batch, or cloud by cloud when it would be too large."""
    if pairs <= _NAIVE_PAIRS_PER_CALL:
        return lambda: fn(*tensors)
    return lambda: [fn(*(t[i : i + 1] for t in tensors)) for i in range(tensors[0].shape[0])]


class _Rows:
    """Timing rows of one case: (implementation, (wall s, CPU s), note)."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.rows: list[tuple] = []

    def add(self, name: str, fn: Callable[[], object], note: str = "") -> None:
        self.rows.append((name, _time(fn, self.repeats), note))


def _fps_cases(libs: _Libraries, b: int, n: int, m: int, repeats: int, naive: bool) -> list[tuple]:
    points = torch.rand(b, n, 3, generator=torch.Generator().manual_seed(n))
    pts = points.numpy()
    rows = _Rows(repeats)
    ref = ops.farthest_point_sample(points, m, backend="numba")
    assert torch.equal(ref, ops.farthest_point_sample(points, m, backend="torch"))
    rows.add("act3d numba", lambda: ops.farthest_point_sample(points, m, backend="numba"))
    rows.add("act3d torch", lambda: ops.farthest_point_sample(points, m, backend="torch"))
    if naive:
        rows.add("naive", lambda: ops.farthest_point_sample_naive(points, m))
    if libs.fpsample is not None:
        fs = libs.fpsample
        same = np.stack([fs.fps_sampling(pts[i], m, start_idx=0) for i in range(b)])
        assert (same == ref.numpy()).all(), "fpsample.fps_sampling disagrees with act3d"
        rows.add(
            "fpsample.fps_sampling",
            lambda: libs.map(lambda i: fs.fps_sampling(pts[i], m, start_idx=0), b),
            "same indices",
        )
        h = 5 if n > 2048 else 3
        # bucket_fps_kdline_sampling does not start at start_idx (fpsample 1.0.2), but it is
        # exact FPS from its own first pick: check that against act3d from the same start
        kd = fs.bucket_fps_kdline_sampling(pts[0], m, h, start_idx=0)
        own = ops.farthest_point_sample(points[:1], m, start=int(kd[0]))
        assert (own.numpy()[0] == kd).all(), "bucket_fps_kdline_sampling is not exact FPS"
        rows.add(
            f"fpsample.bucket_fps_kdline_sampling h={h}",
            lambda: libs.map(lambda i: fs.bucket_fps_kdline_sampling(pts[i], m, h, start_idx=0), b),
            "exact FPS, own start point",
        )
    if libs.o3d is not None:
        o3d = libs.o3d
        clouds = [
            o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[i].astype(np.float64)))
            for i in range(b)
        ]
        rows.add(
            "open3d farthest_point_down_sample",
            lambda: libs.map(lambda i: clouds[i].farthest_point_down_sample(m), b),
            "float64",
        )
    return rows.rows


def _knn_cases(
    libs: _Libraries, b: int, m: int, n: int, k: int, repeats: int, naive: bool
) -> list[tuple]:
    points = torch.rand(b, n, 3, generator=torch.Generator().manual_seed(n + 1))
    query = ops.gather_points(points, ops.farthest_point_sample(points, m))
    pts, q = points.numpy(), query.numpy()
    rows = _Rows(repeats)
    ref_d, ref_i = ops.knn(query, points, k, backend="numba")
    rows.add("act3d numba", lambda: ops.knn(query, points, k, backend="numba"))
    rows.add("act3d torch", lambda: ops.knn(query, points, k, backend="torch"))
    if naive:
        d, i = ops.knn_naive(query[:1], points[:1], k)
        assert torch.equal(i, ref_i[:1]) and torch.equal(d, ref_d[:1])
        rows.add(
            "naive",
            _naive_in_chunks(lambda x, y: ops.knn_naive(x, y, k), query, points, pairs=b * m * n),
            "cloud by cloud" if b * m * n > _NAIVE_PAIRS_PER_CALL else "",
        )
    if libs.spatial is not None:
        tree = libs.spatial.cKDTree
        dd, _ = tree(pts[0]).query(q[0], k)
        np.testing.assert_allclose(dd**2, ref_d[0].numpy(), rtol=1e-4, atol=1e-6)
        rows.add(
            "scipy cKDTree (build + query)",
            lambda: libs.map(lambda i: tree(pts[i]).query(q[i], k), b),
        )
    if libs.pcu is not None:
        pcu = libs.pcu
        rows.add(
            "point-cloud-utils k_nearest_neighbors",
            lambda: libs.map(lambda i: pcu.k_nearest_neighbors(q[i], pts[i], k), b),
        )
    if libs.o3d is not None:
        o3d = libs.o3d

        def one(i: int) -> None:
            tree = o3d.geometry.KDTreeFlann(pts[i].T.astype(np.float64))
            for j in range(m):
                tree.search_knn_vector_3d(q[i, j].astype(np.float64), k)

        rows.add("open3d KDTreeFlann", lambda: libs.map(one, b), "one query per call")
    return rows.rows


def _group_cases(
    libs: _Libraries, b: int, n: int, g: int, k: int, repeats: int, naive: bool
) -> list[tuple]:
    points = torch.rand(b, n, 3, generator=torch.Generator().manual_seed(n + 2))
    pts = points.numpy()
    rows = _Rows(repeats)
    rows.add("act3d numba", lambda: ops.group(points, g, k, backend="numba"))
    rows.add("act3d torch", lambda: ops.group(points, g, k, backend="torch"))
    if naive:
        rows.add("naive", lambda: ops.group_naive(points, g, k))
    if libs.fpsample is not None and libs.spatial is not None:
        fs, tree = libs.fpsample, libs.spatial.cKDTree

        def one(i: int) -> np.ndarray:
            centers = pts[i][fs.bucket_fps_kdline_sampling(pts[i], g, 3, start_idx=0)]
            _, idx = tree(pts[i]).query(centers, k)
            return pts[i][idx] - centers[:, None]

        rows.add("fpsample kdline + cKDTree", lambda: libs.map(one, b), "numpy patches")
    return rows.rows


def _chamfer_cases(libs: _Libraries, b: int, n: int, repeats: int, naive: bool) -> list[tuple]:
    gen = torch.Generator().manual_seed(n + 3)
    a0 = torch.rand(b, n, 3, generator=gen)
    b0 = torch.rand(b, n, 3, generator=gen)
    an, bn = a0.numpy(), b0.numpy()

    def fwd_bwd(fn: Callable) -> Callable[[], None]:
        def run() -> None:
            x = a0.detach().requires_grad_()
            y = b0.detach().requires_grad_()
            fn(x, y).backward()

        return run

    rows = _Rows(repeats)
    rows.add(
        "act3d numba",
        fwd_bwd(lambda x, y: ops.chamfer_distance(x, y, backend="numba")),
        "fwd+bwd",
    )
    rows.add(
        "act3d torch",
        fwd_bwd(lambda x, y: ops.chamfer_distance(x, y, backend="torch")),
        "fwd+bwd",
    )
    if naive:
        rows.add("naive (cdist)", fwd_bwd(ops.chamfer_distance_naive), "fwd+bwd")
    if libs.pcu is not None:
        pcu = libs.pcu
        rows.add(
            "point-cloud-utils chamfer_distance",
            lambda: libs.map(lambda i: pcu.chamfer_distance(an[i], bn[i]), b),
            "forward only",
        )
    if libs.spatial is not None:
        tree = libs.spatial.cKDTree

        def one(i: int) -> float:
            d_ab, _ = tree(bn[i]).query(an[i], 1)
            d_ba, _ = tree(an[i]).query(bn[i], 1)
            return (d_ab.mean() + d_ba.mean()) / 2

        ref = ops.chamfer_distance(a0, b0, reduction="none")
        np.testing.assert_allclose([one(i) for i in range(b)], ref.numpy(), rtol=1e-5)
        rows.add("scipy cKDTree 1-NN both ways", lambda: libs.map(one, b), "forward only")
    if libs.o3d is not None:
        o3d = libs.o3d
        ca = [
            o3d.geometry.PointCloud(o3d.utility.Vector3dVector(an[i].astype(np.float64)))
            for i in range(b)
        ]
        cb = [
            o3d.geometry.PointCloud(o3d.utility.Vector3dVector(bn[i].astype(np.float64)))
            for i in range(b)
        ]
        rows.add(
            "open3d compute_point_cloud_distance",
            lambda: libs.map(
                lambda i: (
                    ca[i].compute_point_cloud_distance(cb[i]),
                    cb[i].compute_point_cloud_distance(ca[i]),
                ),
                b,
            ),
            "forward only",
        )
    return rows.rows


def _report(title: str, rows: list[tuple]) -> tuple[list[str], str]:
    """Markdown rows for one case and its summary line (fastest library / act3d numba)."""
    act3d_wall, act3d_cpu = dict((name, t) for name, t, _ in rows)["act3d numba"]
    lines = [
        f"| {title} | {name} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {wall / act3d_wall:.2f} | {note} |"
        for name, (wall, cpu), note in rows
    ]
    libs = [(t, name) for name, t, _ in rows if not name.startswith(("act3d", "naive"))]
    if not libs:
        return lines, f"| {title} | {act3d_wall * 1e3:.1f} | (none installed) | - | - | - |"
    (best_wall, best_cpu), best = min(libs)
    summary = (
        f"| {title} | {act3d_wall * 1e3:.1f} | {best} | {best_wall * 1e3:.1f} | "
        f"**{best_wall / act3d_wall:.2f}** | {best_cpu / act3d_cpu:.2f} |"
    )
    return lines, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for torch (act3d's kernels use torch's count), numba and the library pool",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per entry (median)")
    parser.add_argument("--batch", type=int, default=32, help="clouds per batch")
    parser.add_argument(
        "--quick", action="store_true", help="2 repeats; naive references only on the small cases"
    )
    args = parser.parse_args(argv)
    if min(args.threads, args.repeats, args.batch) < 1:
        parser.error("--threads, --repeats and --batch must be >= 1")
    repeats = 2 if args.quick else args.repeats
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    libs = _Libraries(args.threads)
    b = args.batch
    big_naive = not args.quick

    command = " ".join(["python benchmarks/ops.py", *(sys.argv[1:] if argv is None else argv)])
    known = {
        "fpsample": libs.fpsample,
        "point-cloud-utils": libs.pcu,
        "scipy": libs.spatial,
        "open3d": libs.o3d,
    }
    installed = ", ".join(name for name, mod in known.items() if mod is not None) or "none"
    missing = ", ".join(name for name, mod in known.items() if mod is None)
    cores = len(os.sched_getaffinity(0))
    print(f"- command: `{command}`")
    print(f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    print(
        f"- machine: {_common.cpu_model()}, {os.cpu_count()} logical cores ({cores} available), "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        f"- threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}, "
        f"library pool {args.threads}"
    )
    print(
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"numba {numba.__version__}, numpy {np.__version__}"
    )
    print(f"- libraries: {installed}" + (f"; not installed (skipped): {missing}" if missing else ""))
    print(
        f"- median of {repeats} runs after a warm-up run (entries slower than "
        f"{_SLOW_BUDGET_S / repeats:.0f} s: fewer runs, >= 1); float32; batch {b}"
    )
    print()

    cases = [
        ("FPS 1024->64", lambda: _fps_cases(libs, b, 1024, 64, repeats, True)),
        ("FPS 8192->1024", lambda: _fps_cases(libs, b, 8192, 1024, repeats, big_naive)),
        ("kNN k=32, 64 in 1024", lambda: _knn_cases(libs, b, 64, 1024, 32, repeats, True)),
        (
            "kNN k=32, 1024 in 8192",
            lambda: _knn_cases(libs, b, 1024, 8192, 32, repeats, big_naive),
        ),
        ("group 1024 -> 64x32", lambda: _group_cases(libs, b, 1024, 64, 32, repeats, True)),
        ("Chamfer L1 2x(1024)", lambda: _chamfer_cases(libs, b, 1024, repeats, True)),
    ]
    detail = [
        "| case | implementation | wall ms | CPU ms | wall / act3d numba | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    summary = [
        "| case | act3d wall ms | fastest library (by wall time) | library wall ms "
        "| library / act3d (wall) | library / act3d (CPU) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for title, run in cases:
        lines, line = _report(title, run())
        detail.extend(lines)
        summary.append(line)
        print(f"<!-- done: {title} -->", file=sys.stderr, flush=True)
    print("\n".join(summary))
    print()
    print("\n".join(detail))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
