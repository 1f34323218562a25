"""Pieces every training stage shares, so the stages do not grow their own copies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DataConfig", "build_pretraining_split"]


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


def build_pretraining_split(data: DataConfig, split: str, train: bool, limit: int | None, seed: int) -> Any:
    """One split for self-supervised pretraining (Stages I and II): random point subsets
    (not FPS, ACT_SPEC §1), normalised, at most ``limit`` samples (synthetic sources generate
    exactly that many shapes; others keep their first ``limit``).

    Returns:
        A torch ``Dataset`` of ``{"points": (N, 3), "label": ()}`` samples.
    """
    from torch.utils.data import Subset

    from act3d.data import build_dataset, parse_source

    synthetic = parse_source(data.source)[0] in ("synthetic", "synthetic-scan")
    dataset = build_dataset(
        data.source,
        split,
        data.num_points,
        root=data.root,
        train=train,
        sampling="random",
        normalize=True,
        seed=seed,
        num_samples=limit if synthetic else None,
    )
    if not synthetic and limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return dataset
