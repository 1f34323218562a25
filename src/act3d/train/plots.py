"""Loss and metric curves as PNG files, drawn headless (matplotlib's Agg canvas, no pyplot).

Input is the list of ``metrics.jsonl`` records the engine writes::

    {"step": 120, "epoch": 3, "split": "train_step" | "train" | "val", "values": {...}}

Output: one ``<metric>.png`` per metric name in the ``train``/``val`` epoch records (both
splits on one axis, the step-level training curve faint behind them) and ``lr.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_metrics"]

_STYLE = {"train": ("tab:blue", "o"), "val": ("tab:orange", "s")}


def _series(records: Iterable[Mapping[str, Any]], split: str, name: str) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for rec in records:
        if rec.get("split") == split and name in rec.get("values", {}):
            xs.append(float(rec["epoch"]) if split != "train_step" else float(rec["step"]))
            ys.append(float(rec["values"][name]))
    return xs, ys


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"


def plot_metrics(
    records: list[Mapping[str, Any]], out_dir: str | Path, steps_per_epoch: int | None = None
) -> list[Path]:
    """Draw the curves of ``records`` into ``out_dir`` and return the written PNG paths.

    Args:
        records: ``metrics.jsonl`` records.
        out_dir: the ``plots/`` folder (created).
        steps_per_epoch: converts the step-level curve to epochs so it shares the x axis;
            without it the step-level curve is left out.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for rec in records:
        if rec.get("split") in ("train", "val"):
            names += [n for n in rec.get("values", {}) if n not in names and n != "lr"]
    written: list[Path] = []
    for name in names:
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if steps_per_epoch:
            xs, ys = _series(records, "train_step", name)
            if xs:
                ax.plot([x / steps_per_epoch for x in xs], ys, color="tab:blue", alpha=0.3, lw=1, label="train (steps)")
        for split, (color, marker) in _STYLE.items():
            xs, ys = _series(records, split, name)
            if xs:
                ax.plot(xs, ys, color=color, marker=marker, ms=3, lw=1.5, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        path = out / f"{_safe_name(name)}.png"
        fig.savefig(path)
        written.append(path)
    xs, ys = _series(records, "train_step", "lr")
    if xs:
        fig = Figure(figsize=(6, 3), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(xs, ys, color="tab:green", lw=1.5)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "lr.png"
        fig.savefig(path)
        written.append(path)
    return written
