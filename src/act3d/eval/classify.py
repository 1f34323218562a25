"""Classification scores and evaluation with test-time voting (ACT_SPEC §3).

:func:`evaluate_classifier` runs a classifier over a labelled dataset and returns
:class:`ClassificationScores` (overall accuracy, mean class accuracy, confusion matrix).

Voting (``vote=V > 0``, the ModelNet40 protocol): every shape is seen in ``V`` augmented
views and the logits of the views are averaged. A view is a per-axis scale U(2/3, 3/2) and
shift U(-0.2, 0.2) of the shape's points. The points of a view come from ``vote_dataset``
when one is given (the CLI passes the test split in training-mode sampling: a fresh random
subset of each shape's FPS pool per view, as the reference does), otherwise from
``dataset`` with the point order shuffled per view (FPS starts at index 0, so a new order
gives new patches). Views are seeded: the same ``seed`` gives the same scores.

Scores are fractions in [0, 1]; mean class accuracy averages the per-class recall over the
classes present in the ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from act3d.data.transforms import ScaleTranslate
from act3d.eval.segmentation import confusion_matrix

__all__ = [
    "ClassificationScores",
    "evaluate_classifier",
    "metrics_from_sums",
    "predict_logits",
    "scores_from_confusion",
]


@dataclass(frozen=True)
class ClassificationScores:
    """Scores of one evaluation.

    Attributes:
        accuracy: overall accuracy (correct / total).
        mean_class_accuracy: mean over classes present in the ground truth of the per-class
            accuracy (recall).
        per_class_accuracy: (C,) per-class accuracy, NaN for classes absent from the ground
            truth.
        confusion: (C, C) int64 counts, ``[i, j]`` = shapes of class i predicted j.
        count: number of shapes scored.
    """

    accuracy: float
    mean_class_accuracy: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    count: int

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict (NaN per-class entries become ``None``)."""
        per_class = [None if np.isnan(v) else float(v) for v in self.per_class_accuracy]
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "count": self.count,
            "per_class_accuracy": per_class,
            "confusion": self.confusion.tolist(),
        }
        if class_names is not None:
            out["class_names"] = list(class_names)
        return out


def scores_from_confusion(confusion: np.ndarray | Tensor) -> ClassificationScores:
    """Scores from a (C, C) confusion matrix (rows ground truth, columns prediction)."""
    conf = confusion.detach().cpu().numpy() if isinstance(confusion, Tensor) else np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {conf.shape}")
    conf = conf.astype(np.int64)
    total = int(conf.sum())
    support = conf.sum(axis=1)
    diag = np.diag(conf).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, diag / np.maximum(support, 1), np.nan)
    present = support > 0
    return ClassificationScores(
        accuracy=float(diag.sum() / total) if total else float("nan"),
        mean_class_accuracy=float(per_class[present].mean()) if present.any() else float("nan"),
        per_class_accuracy=per_class,
        confusion=conf,
        count=total,
    )


def _loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: Dataset,
    *,
    vote: int = 0,
    vote_dataset: Dataset | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Logits of every shape of ``dataset``, in dataset order, on the CPU.

    Args:
        model: maps points (B, N, 3) -> logits (B, C); run in eval mode on its own device.
        dataset: samples ``{"points": (N, 3), "label": ()}``.
        vote: number of augmented views whose logits are averaged (0: one plain pass).
        vote_dataset: where the views' points come from (same length and order as
            ``dataset``); ``None`` shuffles the point order of ``dataset`` per view.
        batch_size: shapes per forward pass.
        seed: seed of the views (shuffles, scales, shifts, subsets).

    Returns:
        logits (M, C) float32 and labels (M,) int64.
    """
    if isinstance(vote, bool) or not isinstance(vote, int) or vote < 0:
        raise ValueError(f"vote must be a non-negative int, got {vote!r}")
    if vote_dataset is not None and len(vote_dataset) != len(dataset):
        raise ValueError(
            f"vote_dataset has {len(vote_dataset)} samples but dataset has {len(dataset)}; "
            "they must hold the same shapes in the same order"
        )
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        labels = torch.cat([batch["label"].reshape(-1) for batch in _loader(dataset, batch_size)])
        if vote == 0:
            logits = torch.cat(
                [model(batch["points"].to(device)).float().cpu() for batch in _loader(dataset, batch_size)]
            )
            return logits, labels
        augment = ScaleTranslate()
        total: Tensor | None = None
        for view in range(vote):
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, view]).generate_state(1)[0]))
            source = dataset if vote_dataset is None else vote_dataset
            if vote_dataset is not None and hasattr(vote_dataset, "set_epoch"):
                vote_dataset.set_epoch(int(np.random.SeedSequence([seed, view, 1]).generate_state(1)[0]))
            parts = []
            for batch in _loader(source, batch_size):
                points = batch["points"]  # (B, N, 3)
                if vote_dataset is None:
                    order = torch.stack([torch.randperm(points.shape[1], generator=gen) for _ in range(len(points))])
                    points = torch.gather(points, 1, order.unsqueeze(-1).expand_as(points))
                points = augment(points, generator=gen)
                parts.append(model(points.to(device)).float().cpu())
            view_logits = torch.cat(parts)
            total = view_logits if total is None else total + view_logits
        assert total is not None
        return total / vote, labels
    finally:
        model.train(was_training)


def evaluate_classifier(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int | None = None,
    vote: int = 0,
    vote_dataset: Dataset | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> ClassificationScores:
    """Accuracy, mean class accuracy and confusion matrix of ``model`` on ``dataset``.

    Args:
        model: a classifier mapping points (B, N, 3) -> logits (B, C).
        dataset: labelled samples ``{"points": (N, 3), "label": ()}``.
        num_classes: C (default: the width of the logits).
        vote: augmented views per shape, logits averaged (0: no voting); see the module
            docstring.
        vote_dataset: the views' points (see :func:`predict_logits`).
        batch_size: shapes per forward pass.
        seed: seed of the voting views.

    Returns:
        :class:`ClassificationScores`.
    """
    logits, labels = predict_logits(
        model, dataset, vote=vote, vote_dataset=vote_dataset, batch_size=batch_size, seed=seed
    )
    classes = logits.shape[1] if num_classes is None else int(num_classes)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"dataset labels span [{int(labels.min())}, {int(labels.max())}] but the classifier has "
            f"{classes} classes; is it the data set the classifier was trained on?"
        )
    return scores_from_confusion(confusion_matrix(logits.argmax(dim=1), labels, classes))


def metrics_from_sums(sums: Mapping[str, Tensor]) -> dict[str, float]:
    """Validation metrics from summed ``{"count", "loss", "confusion"}`` entries.

    Returns ``{"loss", "acc", "mean_class_acc"}`` (fractions in [0, 1]).
    """
    scores = scores_from_confusion(sums["confusion"])
    count = max(float(sums["count"]), 1.0)
    return {
        "loss": float(sums["loss"]) / count,
        "acc": scores.accuracy,
        "mean_class_acc": scores.mean_class_accuracy,
    }
