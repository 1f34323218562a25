"""Pieces every training stage shares, so the stages do not grow their own copies."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """Which data a stage reads and how much of it.

    ``source`` is a SOURCE string of :func:`act3d.data.build_dataset` (``synthetic``,
    ``shapenet:DIR``, ``scanobjectnn:PB_T50_RS``, ``h5:PATH``, ...); ``root`` overrides the
    data set's default folder. ``num_samples`` / ``val_samples`` cap the train / validation
    sets (for synthetic sources: how many shapes are generated). ``label_fraction`` keeps that
    share of the labelled training samples, stratified by class and seeded (low-label studies).
    """

    source: str = "synthetic"
    root: str | None = None
    num_points: int = 1024
    train_split: str = "train"
    val_split: str | None = "test"
    num_samples: int | None = None
    val_samples: int | None = None
    label_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.num_points <= 0:
            raise ValueError(f"data.num_points must be positive, got {self.num_points}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"data.label_fraction must be in (0, 1], got {self.label_fraction}")
        for key in ("num_samples", "val_samples"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"data.{key} must be positive or null, got {value}")
