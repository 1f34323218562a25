"""Few-shot classification: W-way, S-shot episodes, full fine-tuning per fold (ACT_SPEC §3).

Folds come from one of two places:

- the standard ModelNet40 folds, ``ModelNetFewshot/<W>way_<S>shot/<fold>.pkl`` (SOURCE
  ``fewshot`` or ``fewshot:DIR``), 10 of them with 20 test shapes per class;
- drawn from any labelled SOURCE by :func:`draw_folds`: fold ``i`` picks ``W`` classes,
  ``S`` training shapes of each from the training split and ``num_test`` (20) test shapes of
  each from the test split (from the same pool, disjoint, when only one split is given);
  everything is a function of ``(labels, W, S, num_test, seed, i)``.

Each fold fine-tunes a fresh classifier (full mode, the backbone from the checkpoint or
scratch) with the ``fewshot`` preset's schedule (paper: 150 epochs) and records the
last-epoch and the best-epoch test accuracy. The best epoch is chosen on the fold's test
shapes, as the reference does (optimistic); the summary reports mean ± sample std (ddof=1)
over folds of both, in ``<group>/summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from act3d.checkpoint import atomic_path
from act3d.config import save_config
from act3d.train.finetune import (
    FinetuneConfig,
    LabelledSubset,
    RunRecord,
    build_split,
    finetune,
    mean_std,
)

__all__ = [
    "FewShotSummary",
    "Fold",
    "draw_folds",
    "fold_datasets",
    "format_fewshot",
    "is_standard_source",
    "run_fewshot",
    "standard_fold_datasets",
]


@dataclass(frozen=True)
class Fold:
    """One few-shot episode.

    Attributes:
        index: fold number.
        classes: (W,) source class ids; episode label ``i`` is ``classes[i]``.
        train: (W * S,) indices into the training pool.
        test: (W * num_test,) indices into the test pool.
    """

    index: int
    classes: tuple[int, ...]
    train: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "index": self.index,
            "classes": list(self.classes),
            "train": self.train.tolist(),
            "test": self.test.tolist(),
        }


def draw_folds(
    train_labels: np.ndarray | Sequence[int],
    way: int,
    shot: int,
    *,
    test_labels: np.ndarray | Sequence[int] | None = None,
    num_test: int = 20,
    folds: int = 10,
    seed: int = 0,
) -> list[Fold]:
    """Draw few-shot folds from labelled pools.

    Args:
        train_labels: (M,) labels of the training pool.
        way: classes per fold (W).
        shot: training shapes per class (S).
        test_labels: (K,) labels of a separate test pool; ``None`` draws the test shapes
            from the training pool, disjoint from the fold's training shapes.
        num_test: test shapes per class.
        folds: number of folds.
        seed: fold ``i`` is a function of ``(labels, way, shot, num_test, seed, i)``.

    Returns:
        ``folds`` :class:`Fold` objects; classes sorted, indices sorted within a class.

    Raises:
        ValueError: fewer than ``way`` classes with enough shapes.
    """
    for name, value in (("way", way), ("shot", shot), ("num_test", num_test), ("folds", folds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    train_labels = np.asarray(train_labels, dtype=np.int64).reshape(-1)
    shared = test_labels is None
    test_pool = train_labels if shared else np.asarray(test_labels, dtype=np.int64).reshape(-1)
    classes = np.unique(train_labels[train_labels >= 0])
    need_train = shot + (num_test if shared else 0)
    eligible = [
        int(c) for c in classes
        if (train_labels == c).sum() >= need_train and (shared or (test_pool == c).sum() >= num_test)
    ]  # fmt: skip
    if len(eligible) < way:
        where = "the pool" if shared else "the train/test splits"
        raise ValueError(
            f"{way}-way {shot}-shot with {num_test} test shapes per class needs {way} classes with "
            f"enough shapes in {where}; only {len(eligible)} qualify"
        )
    out: list[Fold] = []
    for index in range(folds):
        rng = np.random.default_rng([int(seed), 0xF01D, index])
        chosen = np.sort(rng.choice(np.array(eligible), way, replace=False))
        train_idx, test_idx = [], []
        for c in chosen:
            members = rng.permutation(np.flatnonzero(train_labels == c))
            train_idx.append(np.sort(members[:shot]))
            if shared:
                test_idx.append(np.sort(members[shot : shot + num_test]))
            else:
                pool = rng.permutation(np.flatnonzero(test_pool == c))
                test_idx.append(np.sort(pool[:num_test]))
        out.append(
            Fold(
                index=index,
                classes=tuple(int(c) for c in chosen),
                train=np.concatenate(train_idx).astype(np.int64),
                test=np.concatenate(test_idx).astype(np.int64),
            )
        )
    return out


def fold_datasets(fold: Fold, train_base: Dataset, test_base: Dataset) -> tuple[LabelledSubset, LabelledSubset]:
    """The fold's training and test sets, relabelled to ``0..W-1`` in ``fold.classes`` order."""
    names = list(getattr(train_base, "class_names", []))
    label_map = {c: i for i, c in enumerate(fold.classes)}
    class_names = [names[c] if c < len(names) else f"class_{c}" for c in fold.classes]
    return (
        LabelledSubset(train_base, fold.train, label_map, class_names),
        LabelledSubset(test_base, fold.test, label_map, class_names),
    )


def is_standard_source(source: str) -> bool:
    """True for ``fewshot`` / ``fewshot:DIR`` (the standard ModelNet40 fold folder)."""
    return source.split(":", 1)[0].lower() == "fewshot"


def standard_fold_datasets(
    source: str, way: int, shot: int, fold: int, num_points: int
) -> tuple[Dataset, Dataset]:
    """A standard fold's train and test sets from ``fewshot`` or ``fewshot:DIR``."""
    from act3d.data import build_dataset

    if not is_standard_source(source):
        raise ValueError(f"expected a 'fewshot' or 'fewshot:DIR' source, got {source!r}")
    folder = source.partition(":")[2]
    full = f"fewshot:{way}:{shot}:{fold}" + (f":{folder}" if folder else "")
    return (
        build_dataset(full, "train", num_points, train=True, sampling="fps"),
        build_dataset(full, "test", num_points, train=False, sampling="fps"),
    )


@dataclass
class FewShotSummary:
    """Accuracy over folds (fractions).

    Attributes:
        group_dir: folder of the ``fold-<i>/`` runs and the summary files.
        way, shot: the episode shape.
        records: one :class:`~act3d.train.finetune.RunRecord` per fold.
        stats: ``{"last_acc" | "best_acc": {"mean", "std", "values"}}``.
        folds_from: ``"standard"`` or ``"drawn (seed S)"``.
    """

    group_dir: Path
    way: int
    shot: int
    records: list[RunRecord]
    stats: dict[str, dict[str, Any]]
    folds_from: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "group_dir": str(self.group_dir),
            "way": self.way,
            "shot": self.shot,
            "folds_from": self.folds_from,
            "stats": self.stats,
            "runs": [r.to_dict() for r in self.records],
        }


def format_fewshot(summary: FewShotSummary) -> str:
    """A Markdown report of a :class:`FewShotSummary` (accuracies in %)."""

    def pct(stat: dict[str, Any]) -> str:
        std = stat["std"]
        return f"{100 * stat['mean']:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")

    s = summary.stats
    lines = [
        f"# Few-shot {summary.way}-way {summary.shot}-shot",
        "",
        f"{len(summary.records)} fold(s), {summary.folds_from}; mean ± sample std (ddof=1) over folds, in %.",
        "",
        "| | last epoch | best epoch |",
        "|---|---|---|",
        f"| accuracy | {pct(s['last_acc'])} | {pct(s['best_acc'])} |",
        "",
        "| fold | last acc | best acc | best epoch | time (s) |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(summary.records):
        lines.append(f"| {i} | {100 * r.last_acc:.2f} | {100 * r.best_acc:.2f} | {r.best_epoch} | {r.seconds:.0f} |")
    lines += [
        "",
        "The best epoch is chosen on each fold's test shapes, as the reference does — optimistic; "
        "the last-epoch number is the one to trust.",
    ]
    if summary.records:
        lines.append(f"Backbone init: {summary.records[0].init}.")
    return "\n".join(lines) + "\n"


def _summary(group: Path, way: int, shot: int, records: list[RunRecord], folds_from: str) -> FewShotSummary:
    stats = {}
    for name in ("last_acc", "best_acc"):
        values = [getattr(r, name) for r in records]
        mean, std = mean_std(values)
        stats[name] = {"mean": mean, "std": std, "values": values}
    return FewShotSummary(group, way, shot, records, stats, folds_from)


def _write(summary: FewShotSummary) -> None:
    with atomic_path(summary.group_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    with atomic_path(summary.group_dir / "summary.md") as tmp:
        tmp.write_text(format_fewshot(summary), encoding="utf-8")


def run_fewshot(
    cfg: FinetuneConfig,
    way: int,
    shot: int,
    *,
    folds: int = 10,
    num_test: int = 20,
    fold_seed: int = 0,
    group_dir: str | os.PathLike[str] | None = None,
) -> FewShotSummary:
    """Fine-tune and score every fold; summarise mean ± std over folds.

    Args:
        cfg: the fine-tuning config (``data.source`` is ``fewshot[:DIR]`` for the standard
            folds or any labelled SOURCE to draw folds from; ``model.init`` the backbone).
        way, shot: episode shape.
        folds: number of folds (standard folds: the first ``folds`` of the 10).
        num_test: test shapes per class of drawn folds.
        fold_seed: seed of drawn folds.
        group_dir: folder for ``fold-<i>/`` runs and the summary (default
            ``<run.out_dir>/fewshot-<W>w<S>s-<time>``); an existing group continues: folds
            with ``result.json`` are kept, interrupted ones resume.

    Returns:
        A :class:`FewShotSummary`.
    """
    source = cfg.data.source
    standard = is_standard_source(source)
    if group_dir is None:
        group = Path(cfg.run.out_dir) / f"fewshot-{way}w{shot}s-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        group = Path(group_dir)
    group.mkdir(parents=True, exist_ok=True)
    if not (group / "config.yaml").is_file():
        save_config(cfg, group / "config.yaml")
    drawn: list[Fold] = []
    pools: tuple[Dataset, Dataset] | None = None
    if not standard:
        train_pool = build_split(cfg, cfg.data.train_split, True)
        test_split = cfg.test_split or cfg.data.val_split
        test_pool = build_split(cfg, test_split, False) if test_split is not None else train_pool
        test_labels = None if test_pool is train_pool else np.asarray(test_pool.labels)
        drawn = draw_folds(
            np.asarray(train_pool.labels), way, shot,
            test_labels=test_labels, num_test=num_test, folds=folds, seed=fold_seed,
        )  # fmt: skip
        pools = (train_pool, test_pool)
    folds_from = "standard ModelNet40 folds" if standard else f"drawn from {source} (seed {fold_seed})"
    records: list[RunRecord] = []
    for index in range(folds):
        fold_dir = group / f"fold-{index}"
        if (fold_dir / "result.json").is_file():
            records.append(RunRecord(**json.loads((fold_dir / "result.json").read_text(encoding="utf-8"))))
            continue
        if standard:
            train_set, test_set = standard_fold_datasets(source, way, shot, index, cfg.data.num_points)
        else:
            assert pools is not None
            train_set, test_set = fold_datasets(drawn[index], *pools)
            fold_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(fold_dir / "fold.json") as tmp:
                tmp.write_text(json.dumps(drawn[index].to_dict()) + "\n", encoding="utf-8")
        fold_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=f"fold-{index}"))
        if (fold_dir / "checkpoints" / "last.pt").is_file():
            record = finetune(fold_cfg, resume=fold_dir, train_set=train_set, val_set=test_set)
        else:
            record = finetune(fold_cfg, run_dir=fold_dir, train_set=train_set, val_set=test_set)
        records.append(record)
        _write(_summary(group, way, shot, records, folds_from))
    summary = _summary(group, way, shot, records, folds_from)
    _write(summary)
    return summary
