"""Helpers shared by the benchmark scripts (not part of the act3d package).

Run the scripts as ``python benchmarks/<name>.py``; this module sits beside them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import gc
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "PeakMemory",
    "command_line",
    "cpu_model",
    "fmt_mb",
    "machine_lines",
    "markdown_table",
    "matmul_gflops",
    "median_time",
    "set_threads",
]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def set_threads(threads: int) -> None:
    """Use ``threads`` threads in torch (intra-op) and, when installed, numba."""
    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def machine_lines(threads: int) -> list[str]:
    """Markdown bullet lines describing the machine and software."""
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = "not installed"
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores visible, {mem_gb:.0f} GiB RAM; "
        f"torch threads: {threads}",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"numba {numba_version}, {platform.system()} {platform.release()}",
    ]


def command_line() -> str:
    """The command that is running, for reports."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time (seconds) of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 GFLOP/s of an ``n x n @ n x n`` matmul (median time, 2n³ FLOPs)."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = median_time(lambda: torch.matmul(a, b, out=out), repeats, warmup=2)
    return 2.0 * n**3 / seconds / 1e9


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class PeakMemory:
    """Peak resident memory a piece of code adds, from the kernel's high-water mark.

    torch's CPU tensors come from ``malloc``, which tracemalloc does not see, so this reads
    ``VmHWM``/``VmRSS`` from ``/proc/self/status`` and resets the high-water mark by writing
    ``5`` to ``/proc/self/clear_refs`` (Linux). While measuring, glibc's ``mallopt`` sets
    the mmap threshold to 64 KiB, so every allocation above it is its own mapping, handed
    back to the kernel when freed: the resident set then follows the live tensors instead
    of the allocator's free lists. Afterwards the threshold goes to 32 MiB (glibc's dynamic
    maximum, what a long-running training process ends up with).

    ``measure(fn)`` returns the peak resident size during ``fn()`` minus the resident size
    just before it, in bytes. Without ``/proc`` it falls back to the growth of
    ``ru_maxrss`` (a lower bound: zero when an earlier peak was higher).
    """

    _M_TRIM_THRESHOLD = -1
    _M_MMAP_THRESHOLD = -3

    def __init__(self) -> None:
        self._libc = None
        name = ctypes.util.find_library("c")
        if name and platform.system() == "Linux":
            try:
                libc = ctypes.CDLL(name)
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                self._libc = libc
            except (OSError, AttributeError):
                self._libc = None
        self.method = self._probe()

    def _probe(self) -> str:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._status("VmHWM")
        except (OSError, KeyError):
            return "ru_maxrss growth (lower bound)"
        how = "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before the step"
        if self._libc is not None:
            how += "; glibc mmap threshold 64 KiB while measuring"
        return how

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def _threshold(self, nbytes: int) -> None:
        if self._libc is not None:
            self._libc.mallopt(self._M_MMAP_THRESHOLD, nbytes)
            self._libc.mallopt(self._M_TRIM_THRESHOLD, 2 * nbytes)
            self._libc.malloc_trim(0)

    def measure(self, fn: Callable[[], Any], warmup: int = 1) -> int:
        """Peak bytes added by ``fn()`` (after ``warmup`` unmeasured calls)."""
        self._threshold(64 * 1024)
        try:
            for _ in range(warmup):
                fn()
            gc.collect()
            if self._libc is not None:
                self._libc.malloc_trim(0)
            if self.method.startswith("ru_maxrss"):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                fn()
                return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = self._status("VmRSS")
            fn()
            return max(0, self._status("VmHWM") - before)
        finally:
            self._threshold(32 * 1024 * 1024)

    def describe(self) -> str:
        """How the peak is measured, in words."""
        return self.method


def fmt_mb(nbytes: float) -> str:
    """Bytes as whole MiB."""
    return f"{nbytes / 2**20:.0f}"
