"""Segmentation metrics (ACT_SPEC §3): part-segmentation mIoU and confusion-matrix scores.

Part segmentation (ShapeNetPart):
    a shape's IoU is the mean, over the parts of its category, of
    ``|pred ∩ gt| / |pred ∪ gt|``, where a part absent from both prediction and ground truth
    counts IoU 1. **Instance mIoU** averages over shapes; **class mIoU** averages, over the
    categories present, the mean shape IoU of each category.

Scene segmentation (S3DIS):
    from a confusion matrix (rows ground truth, columns prediction), per-class IoU
    ``tp / (tp + fp + fn)``, **mIoU** its mean over classes present in ground truth or
    prediction, **mAcc** the mean per-class recall over classes present in ground truth,
    **OA** the overall accuracy.

Scores are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "SHAPENETPART_CATEGORIES",
    "SHAPENETPART_CATEGORY_PARTS",
    "PartSegScores",
    "SegScores",
    "confusion_matrix",
    "part_predictions",
    "part_segmentation_scores",
    "segmentation_scores",
    "shape_part_iou",
]

SHAPENETPART_CATEGORIES: tuple[str, ...] = (
    "Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife",
    "Lamp", "Laptop", "Motorbike", "Mug", "Pistol", "Rocket", "Skateboard", "Table",
)  # fmt: skip

_PART_COUNTS = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)
SHAPENETPART_CATEGORY_PARTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(range(sum(_PART_COUNTS[:i]), sum(_PART_COUNTS[: i + 1]))) for i in range(16)
)
"""Part labels (0..49) of each ShapeNetPart category, in :data:`SHAPENETPART_CATEGORIES` order."""


def _as_numpy(x: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def shape_part_iou(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, parts: Sequence[int]
) -> float:
    """Mean IoU of one shape over its category's parts.

    Args:
        pred: (N,) predicted part labels.
        gt: (N,) ground-truth part labels.
        parts: the part labels of the shape's category.

    Returns:
        Mean over ``parts`` of the IoU; a part absent from both counts 1.
    """
    pred, gt = _as_numpy(pred).reshape(-1), _as_numpy(gt).reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    if len(parts) == 0:
        raise ValueError("parts must not be empty")
    ious = []
    for part in parts:
        p, g = pred == part, gt == part
        union = np.logical_or(p, g).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(p, g).sum()) / float(union))
    return float(np.mean(ious))


def part_predictions(
    logits: torch.Tensor,
    category: torch.Tensor,
    category_parts: Sequence[Sequence[int]] = SHAPENETPART_CATEGORY_PARTS,
) -> torch.Tensor:
    """Per-point part labels restricted to each shape's category (the standard protocol).

    Args:
        logits: (B, N, P) per-point part logits.
        category: (B,) int category of each shape.
        category_parts: part labels of each category.

    Returns:
        (B, N) int64: the argmax over the category's parts only.
    """
    if logits.ndim != 3 or tuple(category.shape) != (logits.shape[0],):
        raise ValueError(
            f"logits must be (B, N, P) and category (B,), got {tuple(logits.shape)} and "
            f"{tuple(category.shape)}"
        )
    allowed = torch.zeros(len(category_parts), logits.shape[-1], dtype=torch.bool)
    for c, parts in enumerate(category_parts):
        allowed[c, list(parts)] = True
    allowed = allowed.to(logits.device)[category.long()]  # (B, P)
    masked = logits.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    return masked.argmax(dim=-1)


@dataclass(frozen=True)
class PartSegScores:
    """Part-segmentation scores (fractions).

    Attributes:
        instance_miou: mean shape IoU over all shapes.
        class_miou: mean over the categories present of their mean shape IoU.
        category_miou: category index -> mean shape IoU, for the categories present.
        shape_ious: IoU of each shape, in input order.
    """

    instance_miou: float
    class_miou: float
    category_miou: dict[int, float]
    shape_ious: tuple[float, ...]


def part_segmentation_scores(
    preds: Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor,
    gts: Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor,
    categories: Sequence[int] | np.ndarray | torch.Tensor,
    category_parts: Sequence[Sequence[int]] = SHAPENETPART_CATEGORY_PARTS,
) -> PartSegScores:
    """Instance and class mIoU over a set of shapes.

    Args:
        preds: per shape, (N_i,) predicted part labels (a (S, N) array works too).
        gts: per shape, (N_i,) ground-truth part labels.
        categories: (S,) category index of each shape.
        category_parts: part labels of each category.

    Returns:
        :class:`PartSegScores`.
    """
    cats = _as_numpy(categories).reshape(-1).astype(np.int64)
    if not len(preds) == len(gts) == len(cats):
        raise ValueError(
            f"preds, gts and categories must have the same length, got "
            f"{len(preds)}, {len(gts)}, {len(cats)}"
        )
    if len(cats) == 0:
        raise ValueError("no shapes to score")
    if cats.min() < 0 or cats.max() >= len(category_parts):
        raise ValueError(f"categories must be in [0, {len(category_parts)})")
    shape_ious = tuple(
        shape_part_iou(p, g, category_parts[c]) for p, g, c in zip(preds, gts, cats)
    )
    ious = np.asarray(shape_ious)
    per_category = {int(c): float(ious[cats == c].mean()) for c in np.unique(cats)}
    return PartSegScores(
        instance_miou=float(ious.mean()),
        class_miou=float(np.mean(list(per_category.values()))),
        category_miou=per_category,
        shape_ious=shape_ious,
    )


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Confusion counts.

    Args:
        pred: (...) predicted labels.
        gt: (...) ground-truth labels, same shape.
        num_classes: C.
        ignore_index: ground-truth label to skip.

    Returns:
        (C, C) int64, ``[i, j]`` = points of ground truth i predicted j.
    """
    pred = _as_numpy(pred).reshape(-1).astype(np.int64)
    gt = _as_numpy(gt).reshape(-1).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    if ignore_index is not None:
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
    for name, labels in (("pred", pred), ("gt", gt)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must be in [0, {num_classes})")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


@dataclass(frozen=True)
class SegScores:
    """Scores from a confusion matrix (fractions; NaN for classes not scored).

    Attributes:
        miou: mean IoU over classes present in ground truth or prediction.
        macc: mean per-class accuracy (recall) over classes present in ground truth.
        oa: overall accuracy.
        iou: (C,) per-class IoU.
        acc: (C,) per-class accuracy.
    """

    miou: float
    macc: float
    oa: float
    iou: np.ndarray
    acc: np.ndarray


def segmentation_scores(confusion: np.ndarray | torch.Tensor) -> SegScores:
    """mIoU, mAcc and OA from a (C, C) confusion matrix (rows ground truth)."""
    conf = _as_numpy(confusion).astype(np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {conf.shape}")
    total = conf.sum()
    if total == 0:
        raise ValueError("confusion matrix is empty")
    tp = np.diag(conf)
    gt_count = conf.sum(axis=1)
    union = gt_count + conf.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_count > 0, tp / gt_count, np.nan)
    return SegScores(
        miou=float(np.nanmean(iou)),
        macc=float(np.nanmean(acc)),
        oa=float(tp.sum() / total),
        iou=iou,
        acc=acc,
    )
