"""Evaluation protocols: classification scores and voting, the linear SVM probe, few-shot
folds, embeddings and their plots, segmentation metrics (ACT_SPEC §3).

Names are imported lazily (PEP 562): ``act3d.eval.cli`` loads without torch, and
:mod:`act3d.eval.fewshot` (which builds on :mod:`act3d.train.finetune`) only on use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ClassificationScores": "classify",
    "evaluate_classifier": "classify",
    "predict_logits": "classify",
    "scores_from_confusion": "classify",
    "extract_features": "probe",
    "fit_linear_svm": "probe",
    "svm_probe": "probe",
    "Fold": "fewshot",
    "FewShotSummary": "fewshot",
    "draw_folds": "fewshot",
    "fold_datasets": "fewshot",
    "run_fewshot": "fewshot",
    "embed_files": "embed",
    "embed_points": "embed",
    "save_embeddings": "embed",
    "plot_confusion": "plots",
    "plot_tsne": "plots",
    "tsne_2d": "plots",
    "confusion_matrix": "segmentation",
    "part_segmentation_scores": "segmentation",
    "segmentation_scores": "segmentation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'act3d.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"act3d.eval.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
