"""Progress display: a tqdm bar per epoch on a terminal, one line per epoch otherwise.

Modes: ``"bar"`` (tqdm: loss, samples/s, ETA), ``"log"`` (a single line at the end of each
epoch, for CI logs and files), ``"off"``, and ``"auto"`` = ``"bar"`` when the stream is a
TTY else ``"log"``. Non-zero ranks always get ``"off"``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

from tqdm import tqdm

__all__ = ["EpochProgress", "format_duration", "resolve_progress_mode"]

_MODES = ("auto", "bar", "log", "off")


def resolve_progress_mode(mode: str, stream: TextIO, is_main: bool) -> str:
    """``"bar"``, ``"log"`` or ``"off"`` for ``mode`` on ``stream``."""
    if mode not in _MODES:
        raise ValueError(f"unknown progress mode {mode!r}; valid choices: {', '.join(_MODES)}")
    if not is_main or mode == "off":
        return "off"
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        return "bar" if isatty is not None and isatty() else "log"
    return mode


def format_duration(seconds: float) -> str:
    """``75.2 -> "1m15s"``, ``3725 -> "1h02m"``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class EpochProgress:
    """One epoch's progress. ``update`` after every optimiser step, ``close`` at the end.

    Args:
        epoch: 1-based epoch number; ``epochs``: their total.
        steps: optimiser steps in this epoch.
        mode: ``"bar"``, ``"log"`` or ``"off"`` (see :func:`resolve_progress_mode`).
        stream: where to write (default ``sys.stderr``).
        eta_epochs_left: epochs after this one, for the run ETA in the log line.
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        steps: int,
        mode: str,
        stream: TextIO | None = None,
        eta_epochs_left: int = 0,
    ) -> None:
        if mode not in ("bar", "log", "off"):
            raise ValueError(f"unknown progress mode {mode!r}; valid choices: bar, log, off")
        self.epoch, self.epochs, self.steps, self.mode = epoch, epochs, steps, mode
        self.stream = sys.stderr if stream is None else stream
        self.epochs_left = eta_epochs_left
        self.samples = 0
        self.start = time.perf_counter()
        self._last_update = self.start
        self._bar: tqdm | None = None
        if mode == "bar":
            self._bar = tqdm(
                total=steps,
                desc=f"epoch {epoch}/{epochs}",
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
                unit="step",
            )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def samples_per_s(self) -> float:
        """Training throughput: samples over the time up to the latest :meth:`update`."""
        return self.samples / max(self._last_update - self.start, 1e-9)

    def update(self, samples: int, loss: float | None = None) -> None:
        """One optimiser step of ``samples`` (global) samples; ``loss`` shown when given."""
        self.samples += samples
        self._last_update = time.perf_counter()
        if self._bar is not None:
            postfix = {"samples/s": f"{self.samples_per_s:.1f}"}
            if loss is not None:
                postfix = {"loss": _fmt(loss), **postfix}
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)

    def close(self, metrics: Mapping[str, float]) -> None:
        """End the epoch: close the bar, or write the epoch's log line with ``metrics``."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.mode == "off":
            return
        parts = [f"epoch {self.epoch}/{self.epochs}"]
        parts += [f"{k} {_fmt(v)}" for k, v in metrics.items()]
        parts.append(f"{self.samples_per_s:.1f} samples/s")
        parts.append(f"{format_duration(self.elapsed)}")
        if self.epochs_left:
            parts.append(f"eta {format_duration(self.elapsed * self.epochs_left)}")
        print("  ".join(parts), file=self.stream, flush=True)
