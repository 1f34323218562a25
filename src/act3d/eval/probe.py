"""Linear SVM probe of frozen features (ACT_SPEC §3: "a standard cheap check").

The encoder is frozen (eval mode, no gradient); each shape's descriptor is the encoder
output [cls ‖ max over patches] (2D) on the deterministic test-mode points (FPS to N, no
augmentation), for the training and the test split alike. Features are standardised with
the training set's mean and standard deviation, then a linear SVM (scikit-learn's
``LinearSVC``, squared hinge, one-vs-rest) is fit on the training features.

``C`` is fixed when given; otherwise it is chosen from ``c_grid`` by stratified k-fold
cross-validation on the training set only (mean fold accuracy, ties to the smaller C), then
the SVM is refit on the whole training set. The test set is touched once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from act3d.eval.classify import scores_from_confusion
from act3d.eval.segmentation import confusion_matrix

__all__ = ["C_GRID", "extract_features", "fit_linear_svm", "svm_probe"]

C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def extract_features(
    encoder: nn.Module, dataset: Dataset, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen features of every sample, in dataset order.

    Args:
        encoder: maps points (B, N, 3) -> features (B, F) (e.g. :class:`PointEncoder`); run
            in eval mode on its own device, its train/eval mode restored afterwards.
        dataset: samples ``{"points": (N, 3), "label": ()}``.
        batch_size: shapes per forward pass.

    Returns:
        features (M, F) float32 and labels (M,) int64.
    """
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            feats.append(encoder(batch["points"].to(device)).float().cpu())
            labels.append(batch["label"].reshape(-1))
    finally:
        encoder.train(was_training)
    if not feats:
        raise ValueError("extract_features: the dataset is empty")
    return torch.cat(feats).numpy().astype(np.float32), torch.cat(labels).numpy().astype(np.int64)


def _svm(c: float, seed: int) -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(C=float(c), max_iter=20000, random_state=seed)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True)
    std = np.where(std > 1e-12, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]


def fit_linear_svm(
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    C: float | None = None,
    c_grid: Sequence[float] = C_GRID,
    cv_folds: int = 3,
    seed: int = 0,
) -> tuple[Any, float, dict[float, float]]:
    """Fit a linear SVM, choosing ``C`` by stratified cross-validation when not given.

    Args:
        train_x: (M, F) standardised features.
        train_y: (M,) labels.
        C: a fixed C (no cross-validation).
        c_grid: candidate values of C.
        cv_folds: folds (reduced to the smallest class size; at least 2).
        seed: seed of the fold split and the solver.

    Returns:
        ``(fitted LinearSVC, chosen C, {C: mean CV accuracy})`` (empty dict when C is fixed).
    """
    from sklearn.model_selection import StratifiedKFold

    if len(np.unique(train_y)) < 2:
        raise ValueError("the SVM probe needs at least two classes in the training set")
    cv_scores: dict[float, float] = {}
    if C is None:
        if not c_grid:
            raise ValueError("c_grid must hold at least one value when C is not fixed")
        counts = np.bincount(train_y)
        smallest = int(counts[counts > 0].min())
        if smallest < 2:
            raise ValueError("choosing C by cross-validation needs at least 2 training samples per class; pass C")
        folds = max(2, min(int(cv_folds), smallest))
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for c in c_grid:
            accs = []
            for fit_idx, val_idx in splitter.split(train_x, train_y):
                svm = _svm(c, seed).fit(train_x[fit_idx], train_y[fit_idx])
                accs.append(float((svm.predict(train_x[val_idx]) == train_y[val_idx]).mean()))
            cv_scores[float(c)] = float(np.mean(accs))
        best = max(cv_scores.values())
        C = min(c for c, score in cv_scores.items() if score == best)
    return _svm(C, seed).fit(train_x, train_y), float(C), cv_scores


def svm_probe(
    encoder: nn.Module,
    train_ds: Dataset,
    test_ds: Dataset,
    *,
    C: float | None = None,
    c_grid: Sequence[float] = C_GRID,
    cv_folds: int = 3,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear SVM accuracy of frozen ``encoder`` features (see the module docstring).

    Args:
        encoder: points (B, N, 3) -> features (B, F), e.g. ``act3d.load_encoder(path)``.
        train_ds: labelled training samples (use test-mode sampling: no augmentation).
        test_ds: labelled test samples.
        C: fixed SVM C; ``None`` chooses it from ``c_grid`` by CV on the training set.
        c_grid: candidate C values.
        cv_folds: cross-validation folds.
        batch_size: shapes per forward pass.
        seed: seed of the CV split and solver.

    Returns:
        ``{"accuracy", "mean_class_accuracy", "C", "cv_accuracy": {C: acc}, "num_train",
        "num_test", "feature_dim", "num_classes"}`` (accuracies are fractions).
    """
    train_x, train_y = extract_features(encoder, train_ds, batch_size=batch_size)
    test_x, test_y = extract_features(encoder, test_ds, batch_size=batch_size)
    if (train_y < 0).any() or (test_y < 0).any():
        raise ValueError("the SVM probe needs labelled train and test sets (a label of -1 was found)")
    train_x, test_x = _standardise(train_x.astype(np.float64), test_x.astype(np.float64))
    svm, chosen, cv_scores = fit_linear_svm(train_x, train_y, C=C, c_grid=c_grid, cv_folds=cv_folds, seed=seed)
    pred = svm.predict(test_x)
    classes = int(max(train_y.max(), test_y.max())) + 1
    scores = scores_from_confusion(confusion_matrix(pred, test_y, classes))
    return {
        "accuracy": scores.accuracy,
        "mean_class_accuracy": scores.mean_class_accuracy,
        "C": chosen,
        "cv_accuracy": {str(c): v for c, v in cv_scores.items()},
        "num_train": int(train_y.size),
        "num_test": int(test_y.size),
        "feature_dim": int(train_x.shape[1]),
        "num_classes": classes,
    }
