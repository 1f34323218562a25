"""Part segmentation (ShapeNetPart) on the student backbone: training and evaluation (ACT_SPEC §3).

One training step::

    points (B, N, 3)   a random subset of N points of each shape (N = 2048), normalised to
                       the unit sphere; category (B,) the object category
      augment:  per shape, isotropic scale U(0.8, 1.25) and per-axis shift U(-0.1, 0.1)
                (the reference's); batched, on the device, from torch's RNG
      model:    PartSegmentationModel(encoder, num_parts, num_categories)(points, category)
                -> logits (B, N, P)  (blocks 4, 8, 12, max + mean pooling, category one-hot
                embedding 16 -> 64, 3-NN upsampling)
      loss:     cross-entropy over all P parts (as the reference)

Scoring (:mod:`act3d.eval.segmentation`): each point's part is the argmax over its
category's parts only; a shape's IoU is the mean over its category's parts (a part absent
from both prediction and truth counts 1); **instance mIoU** averages shapes, **class mIoU**
averages the per-category means.

Selection (``selection``) and reporting. Every run reports the **last-epoch** and the
**best-epoch** weights, both scored on the test split at the end:

- ``"val"`` (default): train on the training list only, choose the best epoch by val
  instance mIoU. ShapeNetPart's loader split ``train`` is train + val, so the val shapes
  are taken out of it.
- ``"test"``: the reference's protocol: train on the loader's ``train`` split (ShapeNetPart:
  train + val) and choose the best epoch on the test split. The best-epoch number is then
  optimistic, and every record says so.

Data sources: ``shapenetpart[:DIR]`` (:class:`act3d.data.datasets.ShapeNetPart`, 16
categories, 50 parts) and ``synthetic-parts`` (:class:`act3d.data.synthetic.SyntheticParts`,
14 classes, 45 parts, no download). Initialisation (``model.init``): ``scratch``, a student
``.safetensors``, a Stage II run folder or a classifier (its backbone); the checkpoint
brings its own encoder size, the grouping (``model.num_groups``: 128 for 2048 points) comes
from this config.

Files: an engine run folder plus ``part_segmenter.safetensors`` (last epoch; its metadata
holds everything ``act3d partseg eval`` needs), ``part_segmenter-best.safetensors``,
``result.json``, ``eval.md`` and ``parts.png`` (test shapes coloured by true and predicted
part). ``--seeds`` runs each seed in ``<group>/seed-<s>/`` and writes ``summary.json`` /
``summary.md`` (mean ± sample std).

CLI::

    act3d partseg train --data shapenetpart[:DIR]|synthetic-parts --init CKPT|scratch
                        [--config tiny|paper] [--set a.b=v] [--resume RUN_DIR] [--seeds 0,1,2]
    act3d partseg eval CKPT [--data SOURCE] [--split test] [--picture PNG|none] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from act3d.checkpoint import atomic_path, load_weights, read_weights_metadata, save_weights
from act3d.cli import help_handler
from act3d.config import (
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
    load_config,
    to_dict,
)
from act3d.eval.segmentation import PartSegScores, part_predictions, part_segmentation_scores
from act3d.models.partseg import PartSegmentationModel
from act3d.models.student import EncoderConfig
from act3d.train.common import init_backbone, parse_seeds, resumed_seeds, run_seed_group, write_group_summary
from act3d.train.engine import FitResult, Task, fit, resolve_device
from act3d.train.finetune import LabelledSubset, mean_std
from act3d.train.segment import SceneModelConfig

__all__ = [
    "PART_SEGMENTER_FORMAT",
    "PART_SOURCES",
    "STAGE",
    "PartDataConfig",
    "PartModelConfig",
    "PartSegConfig",
    "PartSegEval",
    "PartSegRecord",
    "PartSegSummary",
    "PartSegTask",
    "PartSegmenter",
    "PartTaxonomy",
    "build_part_segmenter",
    "build_part_split",
    "evaluate_part_segmenter",
    "format_part_eval",
    "format_part_summary",
    "load_part_segmenter",
    "partseg_seeds",
    "partseg_train",
    "register",
    "render_part_segmentation",
    "save_part_segmenter",
    "scale_shift",
]

STAGE = "partseg"
PART_SEGMENTER_FORMAT = "act3d.part_segmenter"
PART_SOURCES = ("shapenetpart", "synthetic-parts")
_SOURCE_CHOICES = "'shapenetpart[:DIR]', 'synthetic-parts'"
_SELECTIONS = ("val", "test")


# ----------------------------------------------------------------------------- config


@dataclass
class PartDataConfig:
    """Which part-labelled shapes, and how many.

    Attributes:
        source: ``shapenetpart:DIR``, ``shapenetpart`` (folder ``root``, else
            ``$ACT3D_DATA_ROOT/ShapeNetPart`` or ``./data/ShapeNetPart``) or ``synthetic-parts``.
        root: ShapeNetPart folder when ``source`` names none.
        num_points: points per shape (2048).
        num_samples: training shapes (``synthetic-parts``: shapes generated; ShapeNetPart: a
            fixed random subset); ``None`` for all.
        val_samples: validation shapes (as ``num_samples``).
        test_samples: test shapes scored at the end (as ``num_samples``).
    """

    source: str = "shapenetpart"
    root: str | None = None
    num_points: int = 2048
    num_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None

    def __post_init__(self) -> None:
        from act3d.data import parse_source

        kind = self.source.split(":", 1)[0].lower()
        if kind not in PART_SOURCES:
            raise ValueError(f"unknown data.source {self.source!r} (--data); valid choices: {_SOURCE_CHOICES}")
        parse_source(self.source)
        if self.num_points < 1:
            raise ValueError(f"data.num_points must be positive, got {self.num_points}")
        for key in ("num_samples", "val_samples", "test_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"data.{key} must be positive or null, got {value}")


@dataclass
class PartModelConfig(SceneModelConfig):
    """The part segmentation model (:class:`~act3d.models.partseg.PartSegmentationModel`):
    the scene segmenter's fields (:class:`~act3d.train.segment.SceneModelConfig`; patches per
    shape, 128 x 32 for 2048 points) plus the category branch.

    Attributes:
        category_dim: width of the category one-hot embedding (16 -> 64).
    """

    category_dim: int = 64


def _default_optim() -> OptimConfig:
    return OptimConfig(lr=2e-4, weight_decay=0.05, epochs=300, warmup_epochs=10, batch_size=16, grad_clip=10.0)


def _default_run() -> RunConfig:
    return RunConfig(name="partseg", best_metric="val/ins_miou", best_mode="max")


@dataclass
class PartSegConfig:
    """Everything ``act3d partseg train`` runs; defaults follow ACT_SPEC §3 and the reference.

    Attributes:
        data: see :class:`PartDataConfig`.
        model: see :class:`PartModelConfig`.
        selection: where the best epoch is chosen: ``"val"`` (train on the training list only)
            or ``"test"`` (the reference's: train on train + val, select on test; optimistic).
        augment: ``"scale_shift"`` (the reference's) or ``"none"``.
        scale_range: isotropic scale ``U(low, high)`` per shape.
        shift_range: per-axis shift ``U(-shift, shift)`` per shape.
        eval_batch_size: shapes per forward pass in the final evaluation.
        picture: draw ``parts.png`` (test shapes, true and predicted parts).
        optim, runtime, run: the engine's sections.
    """

    data: PartDataConfig = field(default_factory=PartDataConfig)
    model: PartModelConfig = field(default_factory=PartModelConfig)
    selection: Literal["val", "test"] = "val"
    augment: Literal["scale_shift", "none"] = "scale_shift"
    scale_range: tuple[float, float] = (0.8, 1.25)
    shift_range: float = 0.1
    eval_batch_size: int = 32
    picture: bool = True
    optim: OptimConfig = field(default_factory=_default_optim)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=_default_run)

    def __post_init__(self) -> None:
        if self.selection not in _SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; valid choices: {list(_SELECTIONS)}")
        if self.augment not in ("scale_shift", "none"):
            raise ValueError(f"unknown augment {self.augment!r}; valid choices: ['scale_shift', 'none']")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.shift_range < 0:
            raise ValueError(f"shift_range must be >= 0, got {self.shift_range}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size}")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PartTaxonomy:
    """What the labels of a part-labelled data set mean.

    Attributes:
        category_names: the object categories, in label order.
        category_parts: the global part ids of each category.
        num_parts: P, the number of global part ids.
        part_names: a name per global part id, or empty.
    """

    category_names: tuple[str, ...]
    category_parts: tuple[tuple[int, ...], ...]
    num_parts: int
    part_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, dataset: Any) -> PartTaxonomy:
        """From a data set with ``class_names``, ``category_parts`` (name -> parts) and ``num_parts``."""
        names = tuple(getattr(dataset, "class_names", ()))
        table = getattr(dataset, "category_parts", None)
        if not names or table is None or not getattr(dataset, "num_parts", 0):
            raise ValueError(f"{type(dataset).__name__} is not part-labelled (no class_names/category_parts/num_parts)")
        parts = tuple(tuple(int(p) for p in table[n]) for n in names)
        return cls(names, parts, int(dataset.num_parts), tuple(getattr(dataset, "part_names", ())))

    def to_meta(self) -> dict[str, str]:
        """Checkpoint metadata entries."""
        return {
            "category_names": json.dumps(list(self.category_names)),
            "category_parts": json.dumps([list(p) for p in self.category_parts]),
            "num_parts": str(self.num_parts),
            "part_names": json.dumps(list(self.part_names)),
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> PartTaxonomy:
        """Inverse of :meth:`to_meta`."""
        return cls(
            tuple(json.loads(meta["category_names"])),
            tuple(tuple(p) for p in json.loads(meta["category_parts"])),
            int(meta["num_parts"]),
            tuple(json.loads(meta.get("part_names", "[]"))),
        )


def _source_kind(source: str) -> str:
    return source.split(":", 1)[0].lower()


def build_part_split(data: PartDataConfig, split: str, train: bool, cap: int | None = None) -> Dataset:
    """One split of ``data.source`` (``"train"``, ``"val"`` or ``"test"``), at most ``cap`` shapes.

    The data seed is fixed (0): every run sees the same shapes, and test-mode sampling is a
    function of the shape index only; the training draws come from the engine's RNG.
    ``synthetic-parts`` generates exactly ``cap`` shapes; ShapeNetPart keeps a fixed random
    subset. ShapeNetPart's ``"train"`` is train + val (the loader's convention).

    Raises:
        FileNotFoundError: the data folder is missing, naming the layout and ``--data``.
    """
    from act3d.data import build_dataset

    synthetic = _source_kind(data.source) == "synthetic-parts"
    try:
        dataset = build_dataset(
            data.source, split, data.num_points, root=data.root, train=train, seed=0,
            num_samples=cap if synthetic else None,
        )
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--data {data.source} (data.source): {err}") from err
    return dataset if synthetic else _cap(dataset, cap)


def _cap(dataset: Dataset, cap: int | None) -> Dataset:
    """A fixed random subset of ``cap`` shapes (kept in data set order), or ``dataset``."""
    if cap is None or cap >= len(dataset):
        return dataset
    rng = np.random.default_rng([0, 0x9A27, len(dataset)])
    return LabelledSubset(dataset, np.sort(rng.choice(len(dataset), cap, replace=False)))


def _unwrap(dataset: Dataset) -> Dataset:
    while isinstance(dataset, LabelledSubset):
        dataset = dataset.base
    return dataset


def _without(base: Dataset, other: Dataset) -> Dataset:
    """``base`` minus the shape files of ``other`` (ShapeNetPart's ``train`` holds ``val``)."""
    drop = set(getattr(other, "files", ()))
    files = getattr(base, "files", None)
    if not drop or files is None:
        return base
    return LabelledSubset(base, [i for i, f in enumerate(files) if f not in drop])


def scale_shift(points: Tensor, scale_range: tuple[float, float] = (0.8, 1.25), shift: float = 0.1) -> Tensor:
    """The reference's part-segmentation augmentation, batched.

    Args:
        points: (B, N, 3).
        scale_range: one isotropic scale ``U(low, high)`` per shape.
        shift: one per-axis shift ``U(-shift, shift)`` per shape.

    Returns:
        (B, N, 3) ``points * scale + shift`` (draws from torch's global RNG).
    """
    b = points.shape[0]
    scale = torch.empty(b, 1, 1, device=points.device, dtype=points.dtype).uniform_(*scale_range)
    offset = torch.empty(b, 1, 3, device=points.device, dtype=points.dtype).uniform_(-shift, shift)
    return points * scale + offset


# ----------------------------------------------------------------------------- model and files


def build_part_segmenter(
    model_cfg: PartModelConfig, encoder: EncoderConfig, taxonomy: PartTaxonomy
) -> PartSegmentationModel:
    """The part segmentation model for ``taxonomy``'s parts and categories."""
    return PartSegmentationModel(
        encoder,
        num_parts=taxonomy.num_parts,
        num_categories=len(taxonomy.category_names),
        category_dim=model_cfg.category_dim,
        propagation_dims=None if model_cfg.propagation_dims is None else tuple(model_cfg.propagation_dims),
        head_dims=tuple(model_cfg.head_dims),
        dropout=model_cfg.dropout,
    )


@dataclass
class PartSegmenter:
    """A loaded part segmenter.

    Attributes:
        model: the model, in eval mode.
        taxonomy: its categories and parts.
        data: the data settings it was trained with.
        model_cfg: its :class:`PartModelConfig`.
        init: where its backbone started (``scratch`` or a file).
        weights: ``"last"`` or ``"best"`` epoch.
    """

    model: PartSegmentationModel
    taxonomy: PartTaxonomy
    data: PartDataConfig
    model_cfg: PartModelConfig
    init: str
    weights: str


def save_part_segmenter(
    model: PartSegmentationModel,
    path: str | os.PathLike[str],
    *,
    taxonomy: PartTaxonomy,
    data: PartDataConfig,
    model_cfg: PartModelConfig,
    init: str,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write a part segmenter's weights and everything :func:`load_part_segmenter` needs
    (metadata: ``format``, ``encoder_config``, ``model_config``, ``data_config``, the
    taxonomy, ``init``, plus ``extra``)."""
    if not isinstance(model, PartSegmentationModel) or model.category_embed is None:
        raise ValueError("model must be a PartSegmentationModel with a category branch")
    if model.num_parts != taxonomy.num_parts or model.num_categories != len(taxonomy.category_names):
        raise ValueError(
            f"model has {model.num_parts} parts / {model.num_categories} categories, the taxonomy "
            f"{taxonomy.num_parts} / {len(taxonomy.category_names)}"
        )
    meta = {
        "format": PART_SEGMENTER_FORMAT,
        "format_version": "1",
        "encoder_config": json.dumps(model.backbone.config.to_dict(), sort_keys=True),
        "model_config": json.dumps(to_dict(model_cfg), sort_keys=True),
        "data_config": json.dumps(to_dict(data), sort_keys=True),
        **taxonomy.to_meta(),
        "init": init,
        **dict(extra or {}),
    }
    return save_weights(model.state_dict(), path, meta)


def load_part_segmenter(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> PartSegmenter:
    """Load a part segmenter written by :func:`save_part_segmenter` (or a partseg run folder).

    Raises:
        FileNotFoundError: nothing at ``path`` (a multi-seed folder names its seeds).
        ValueError: another format, bad metadata, or keys/shapes that do not match, naming the file.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "part_segmenter.safetensors"
        if not candidate.is_file():
            seeds = sorted(p.name for p in path.glob("seed-*"))
            hint = f"; this is a multi-seed folder, pick one of {seeds}" if seeds else ""
            raise FileNotFoundError(f"{path}: no part_segmenter.safetensors{hint}")
        path = candidate
    if not path.is_file():
        raise FileNotFoundError(f"no part segmenter at {path} (expected part_segmenter.safetensors or a run folder)")
    meta = read_weights_metadata(path)
    if meta.get("format") != PART_SEGMENTER_FORMAT:
        raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected {PART_SEGMENTER_FORMAT!r}")
    try:
        encoder = EncoderConfig.from_dict(json.loads(meta["encoder_config"]))
        model_cfg = config_from_dict(PartModelConfig, json.loads(meta["model_config"]), str(path))
        data = config_from_dict(PartDataConfig, json.loads(meta["data_config"]), str(path))
        taxonomy = PartTaxonomy.from_meta(meta)
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: bad part segmenter metadata ({err})") from err
    model = build_part_segmenter(model_cfg, encoder, taxonomy)
    state = load_weights(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: part segmenter keys do not match; missing: {missing}; unexpected: {unexpected}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{path}: shape mismatch for {key!r}: file {tuple(value.shape)}, model {tuple(own[key].shape)}"
            )
    model.load_state_dict(state)
    return PartSegmenter(
        model.to(device).eval(), taxonomy, data, model_cfg, meta.get("init", ""), meta.get("weights", "")
    )


# ----------------------------------------------------------------------------- evaluation


@dataclass
class PartSegEval:
    """Scores of a part segmenter on a set of shapes.

    Attributes:
        scores: instance / class mIoU, per-category mIoU and per-shape IoU (fractions).
        accuracy: overall point accuracy.
        shapes: shapes scored.
        seconds: wall time.
        predictions: (S, N) int64 predicted part ids (global), in data set order.
        categories: (S,) int64 category of each shape.
    """

    scores: PartSegScores
    accuracy: float
    shapes: int
    seconds: float
    predictions: np.ndarray
    categories: np.ndarray

    def to_dict(self, taxonomy: PartTaxonomy) -> dict[str, Any]:
        """JSON-ready summary (no predictions): per-category IoU keyed by category name."""
        s = self.scores
        counts = np.bincount(self.categories, minlength=len(taxonomy.category_names))
        return {
            "instance_miou": s.instance_miou,
            "class_miou": s.class_miou,
            "accuracy": self.accuracy,
            "shapes": self.shapes,
            "category_iou": {taxonomy.category_names[c]: v for c, v in sorted(s.category_miou.items())},
            "category_shapes": {taxonomy.category_names[c]: int(n) for c, n in enumerate(counts) if n},
            "seconds": self.seconds,
        }


@torch.no_grad()
def evaluate_part_segmenter(
    model: nn.Module,
    dataset: Dataset,
    taxonomy: PartTaxonomy,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> PartSegEval:
    """Score ``model`` on every shape of ``dataset`` (run in eval mode, mode restored).

    Args:
        model: maps ``(points (B, N, 3), category (B,))`` to (B, N, P) logits.
        dataset: items ``{"points", "label", "seg"}``.
        taxonomy: the categories' parts (predictions are restricted to them).
        batch_size: shapes per forward pass.
        device: where to run (default: the model's).

    Returns:
        A :class:`PartSegEval`.
    """
    if len(dataset) == 0:
        raise ValueError("no shapes to evaluate")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    tic = time.perf_counter()
    was_training = model.training
    model.eval()
    preds, gts, cats = [], [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            category = batch["label"]
            logits = model(batch["points"].to(device), category.to(device)).float()
            preds.append(part_predictions(logits, category.to(device), taxonomy.category_parts).cpu())
            gts.append(batch["seg"])
            cats.append(category)
    finally:
        model.train(was_training)
    pred, gt, cat = torch.cat(preds).numpy(), torch.cat(gts).numpy(), torch.cat(cats).numpy()
    scores = part_segmentation_scores(pred, gt, cat, taxonomy.category_parts)
    seconds = time.perf_counter() - tic
    return PartSegEval(scores, float((pred == gt).mean()), len(cat), seconds, pred, cat.astype(np.int64))


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def format_part_eval(
    evals: Mapping[str, PartSegEval],
    taxonomy: PartTaxonomy,
    *,
    title: str = "Part segmentation",
    notes: Sequence[str] = (),
) -> str:
    """A Markdown report: one column per evaluation (e.g. last / best epoch), in %."""
    cols = list(evals)
    lines = [f"# {title}", "", "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    rows = (("instance mIoU", "instance_miou"), ("class mIoU", "class_miou"))
    for label, attr in rows:
        lines.append(f"| **{label}** | " + " | ".join(_pct(getattr(evals[c].scores, attr)) for c in cols) + " |")
    lines.append("| point accuracy | " + " | ".join(_pct(evals[c].accuracy) for c in cols) + " |")
    lines.append("| shapes | " + " | ".join(str(evals[c].shapes) for c in cols) + " |")
    lines += ["", "| category | shapes | " + " | ".join(f"{c} IoU" for c in cols) + " |"]
    lines.append("|---|---|" + "---|" * len(cols))
    first = evals[cols[0]]
    counts = np.bincount(first.categories, minlength=len(taxonomy.category_names))
    for k, name in enumerate(taxonomy.category_names):
        cells = [_pct(evals[c].scores.category_miou.get(k)) for c in cols]
        lines.append(f"| {name} | {int(counts[k])} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {note}" for note in notes]
    present = counts[counts > 0]
    if len(present) > 1 and (present == present[0]).all():
        lines.append("- Every category has the same number of shapes here, so instance and class mIoU coincide.")
    lines.append(
        "- Each point's part is the argmax over its category's parts; a shape's IoU averages its category's "
        "parts (a part absent from truth and prediction counts 1); instance mIoU averages shapes, class mIoU "
        "averages categories ('-': no shapes)."
    )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- picture

def render_part_segmentation(
    clouds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    parts: Sequence[Sequence[int]],
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    point_size: float = 3.0,
    panel_size: float = 2.4,
    dpi: int = 100,
) -> Path:
    """A PNG with one column per shape: true parts above, predicted parts below.

    Args:
        clouds: per shape, (N, 3) y-up points.
        truths, preds: per shape, (N,) global part ids.
        parts: per shape, its category's part ids (colours follow their order; a predicted
            part outside the category gets the last colour).
        path: the PNG to write.
        titles: a title per shape.
        point_size, panel_size, dpi: drawing sizes.
    """
    from act3d.viz import CATEGORY_COLOURS, render_clouds

    n = len(clouds)
    if n == 0 or not (len(truths) == len(preds) == len(parts) == n):
        raise ValueError(
            f"need one truth, prediction and part list per cloud, got {n}, {len(truths)}, {len(preds)}, {len(parts)}"
        )
    colour_of = [{int(p): i for i, p in enumerate(category)} for category in parts]
    other = len(CATEGORY_COLOURS) - 1

    def local(k: int, labels: np.ndarray) -> np.ndarray:
        return np.array([colour_of[k].get(int(v), other) for v in np.asarray(labels)], dtype=np.int64)

    names = [f"{titles[k]}\ntruth" if titles is not None else "truth" for k in range(n)]
    path = render_clouds(
        [*clouds, *clouds], names + ["prediction"] * n, path, ncols=n, point_size=point_size,
        panel_size=panel_size, dpi=dpi,
        labels=[local(k, truths[k]) for k in range(n)] + [local(k, preds[k]) for k in range(n)],
    )  # fmt: skip
    return Path(path)


def _draw_examples(ev: PartSegEval, dataset: Dataset, taxonomy: PartTaxonomy, path: Path, max_shapes: int = 6) -> Path:
    """The first shape of each category (up to ``max_shapes``) with its true and predicted parts."""
    chosen: list[int] = []
    seen: set[int] = set()
    for i, c in enumerate(ev.categories.tolist()):
        if c not in seen:
            seen.add(c)
            chosen.append(i)
        if len(chosen) == max_shapes:
            break
    items = [dataset[i] for i in chosen]
    cats = [int(it["label"]) for it in items]
    titles = [f"{taxonomy.category_names[c]} (IoU {100 * ev.scores.shape_ious[i]:.0f})" for c, i in zip(cats, chosen)]
    return render_part_segmentation(
        [it["points"].numpy() for it in items], [it["seg"].numpy() for it in items],
        [ev.predictions[i] for i in chosen], [taxonomy.category_parts[c] for c in cats], path, titles=titles,
    )


# ----------------------------------------------------------------------------- the task


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PartSegTask(Task):
    """Part segmentation as an engine :class:`~act3d.train.engine.Task`.

    Construction does no I/O; :meth:`prepare` builds the data sets and reads the initial
    backbone (so a missing folder or checkpoint fails before a run folder is made).
    """

    def __init__(self, cfg: PartSegConfig) -> None:
        self.cfg = cfg
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._test: Dataset | None = None
        self._backbone: tuple[EncoderConfig, dict[str, Tensor] | None, str] | None = None
        self.taxonomy: PartTaxonomy | None = None
        self.load_report: dict[str, Any] = {}

    def prepare(self) -> None:
        """Build the train / validation / test sets and read ``model.init`` (once)."""
        if self._train is not None:
            return
        cfg, d = self.cfg, self.cfg.data
        synthetic = _source_kind(d.source) == "synthetic-parts"
        train = build_part_split(d, "train", True, d.num_samples if synthetic else None)
        self.taxonomy = PartTaxonomy.of(train)
        if cfg.selection == "val":
            train = _without(train, build_part_split(d, "val", False))
            self._val = build_part_split(d, "val", False, d.val_samples)
        else:
            self._val = build_part_split(d, "test", False, d.val_samples)
        self._train = _cap(train, d.num_samples)
        self._test = build_part_split(d, "test", False, d.test_samples)
        m = cfg.model
        self._backbone = init_backbone(
            m.init, m.encoder, num_groups=m.num_groups, group_size=m.group_size, drop_path=m.drop_path
        )

    @property
    def selected_on_test(self) -> bool:
        """True when the best epoch is chosen on the test split (the reference's protocol)."""
        return self.cfg.selection == "test"

    def train_dataset(self) -> Dataset:
        self.prepare()
        assert self._train is not None
        return self._train

    def val_dataset(self) -> Dataset:
        self.prepare()
        assert self._val is not None
        return self._val

    def test_dataset(self) -> Dataset:
        """The split the final numbers are reported on."""
        self.prepare()
        assert self._test is not None
        return self._test

    def build_model(self) -> PartSegmentationModel:
        self.prepare()
        assert self._backbone is not None and self.taxonomy is not None
        config, state, origin = self._backbone
        model = build_part_segmenter(self.cfg.model, config, self.taxonomy)
        if state is not None:
            report = model.load_backbone(state, strict=True)
            self.load_report = {"init": origin, "loaded": len(report.loaded)}
        else:
            self.load_report = {"init": "scratch", "loaded": 0}
        return model

    def augment(self, points: Tensor) -> Tensor:
        """Training augmentation of a batch on its device. points: (B, N, 3) -> same."""
        if self.cfg.augment == "none":
            return points
        return scale_shift(points, tuple(self.cfg.scale_range), self.cfg.shift_range)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(self.augment(batch["points"]), batch["label"])  # (B, N, P)
        seg = batch["seg"]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), seg.reshape(-1))
        acc = (logits.argmax(dim=-1) == seg).float().mean()
        return loss, {"acc": acc.detach()}

    def validation_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        assert self.taxonomy is not None
        category, seg = batch["label"], batch["seg"]
        logits = model(batch["points"], category).float()  # (B, N, P)
        pred = part_predictions(logits, category, self.taxonomy.category_parts)
        scores = part_segmentation_scores(pred.cpu(), seg.cpu(), category.cpu(), self.taxonomy.category_parts)
        num_categories = len(self.taxonomy.category_names)
        ious = torch.tensor(scores.shape_ious, dtype=torch.float64)
        iou_sum = torch.zeros(num_categories, dtype=torch.float64).index_add_(0, category.cpu(), ious)
        return {
            "points": torch.tensor(seg.numel()),
            "loss": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seg.reshape(-1), reduction="sum"),
            "correct": (pred == seg).sum(),
            "iou_sum": iou_sum,
            "shapes": torch.bincount(category.cpu(), minlength=num_categories),
        }

    def validation_metrics(self, sums: Mapping[str, Tensor]) -> dict[str, float]:
        points = max(float(sums["points"]), 1.0)
        shapes = sums["shapes"].double().cpu()
        iou_sum = sums["iou_sum"].double().cpu()
        present = shapes > 0
        return {
            "loss": float(sums["loss"]) / points,
            "acc": float(sums["correct"]) / points,
            "ins_miou": float(iou_sum.sum() / shapes.sum().clamp(min=1)),
            "cls_miou": float((iou_sum[present] / shapes[present]).mean()) if bool(present.any()) else 0.0,
        }

    def on_fit_end(self, model: nn.Module, run_dir: Path) -> None:
        assert isinstance(model, PartSegmentationModel) and self.taxonomy is not None
        common = dict(
            taxonomy=self.taxonomy, data=self.cfg.data, model_cfg=self.cfg.model,
            init=str(self.load_report.get("init", self.cfg.model.init)),
        )
        save_part_segmenter(model, run_dir / "part_segmenter.safetensors", extra={"weights": "last"}, **common)
        best = run_dir / "checkpoints" / "best.safetensors"
        if best.is_file():
            copy = build_part_segmenter(self.cfg.model, model.backbone.config, self.taxonomy)
            copy.load_state_dict(load_weights(best))
            save_part_segmenter(copy, run_dir / "part_segmenter-best.safetensors", extra={"weights": "best"}, **common)


# ----------------------------------------------------------------------------- running


@dataclass
class PartSegRecord:
    """What one part segmentation run reports (fractions in [0, 1], all on the test split).

    Attributes:
        run_dir: the engine run folder.
        seed: ``runtime.seed``.
        source: the data source.
        init: ``"scratch"`` or the checkpoint the backbone came from.
        backbone_keys_loaded: backbone tensors loaded from ``init``.
        selection: where the best epoch was chosen, in words.
        selected_on_test: the best epoch was chosen on the test split (optimistic best numbers).
        epochs, steps: trained.
        best_epoch: the epoch chosen by ``run.best_metric``.
        train_size, val_size, test_size: shapes in each set.
        last_instance_miou, last_class_miou: last-epoch weights.
        best_instance_miou, best_class_miou: best-epoch weights.
        last_category_iou, best_category_iou: per-category mIoU by name.
        train_seconds: training wall time; seconds: the whole run.
    """

    run_dir: str
    seed: int
    source: str
    init: str
    backbone_keys_loaded: int
    selection: str
    selected_on_test: bool
    epochs: int
    steps: int
    best_epoch: int | None
    train_size: int
    val_size: int
    test_size: int
    last_instance_miou: float
    last_class_miou: float
    best_instance_miou: float
    best_class_miou: float
    last_category_iou: dict[str, float]
    best_category_iou: dict[str, float]
    train_seconds: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def _selection_words(cfg: PartSegConfig) -> str:
    if cfg.selection == "test":
        return (
            "test split, as the reference does (optimistic; trained on the loader's train split, "
            "ShapeNetPart: train + val)"
        )
    return "val split (trained on the train split only)"


def partseg_train(
    cfg: PartSegConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> PartSegRecord | None:
    """Train a part segmenter, then score its last- and best-epoch weights on the test split.

    Writes ``part_segmenter.safetensors``, ``part_segmenter-best.safetensors``,
    ``result.json``, ``eval.md`` and (``cfg.picture``) ``parts.png`` into the run folder.

    Args:
        cfg: the config (one seed: ``cfg.runtime.seed``).
        run_dir: the run folder (default ``<run.out_dir>/partseg-<run.name>-<time>``).
        resume: continue the run in this folder.

    Returns:
        A :class:`PartSegRecord` (``None`` on the other ranks under torchrun).
    """
    tic = time.perf_counter()
    task = PartSegTask(cfg)
    task.prepare()  # a bad data folder or checkpoint fails before the run folder exists
    result: FitResult = fit(task, cfg, stage=STAGE, run_dir=run_dir, resume=resume)
    train_seconds = time.perf_counter() - tic
    out = result.run_dir
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 evaluates and writes
        return None
    device = resolve_device(cfg.runtime.device)
    test = task.test_dataset()
    evals: dict[str, PartSegEval] = {}
    with _threads(cfg.runtime.threads):
        files = (("last epoch", "part_segmenter.safetensors"), ("best epoch", "part_segmenter-best.safetensors"))
        for tag, name in files:
            path = out / name if (out / name).is_file() else out / "part_segmenter.safetensors"
            segmenter = load_part_segmenter(path, device)
            evals[tag] = evaluate_part_segmenter(segmenter.model, test, segmenter.taxonomy,
                                                 batch_size=cfg.eval_batch_size, device=device)
        taxonomy = segmenter.taxonomy
        last, best = evals["last epoch"], evals["best epoch"]
        record = PartSegRecord(
            run_dir=str(out),
            seed=cfg.runtime.seed,
            source=cfg.data.source,
            init=segmenter.init,
            backbone_keys_loaded=int(task.load_report.get("loaded", 0)),
            selection=_selection_words(cfg),
            selected_on_test=task.selected_on_test,
            epochs=result.epochs,
            steps=result.steps,
            best_epoch=result.best_epoch,
            train_size=len(task.train_dataset()),
            val_size=len(task.val_dataset()),
            test_size=len(test),
            last_instance_miou=last.scores.instance_miou,
            last_class_miou=last.scores.class_miou,
            best_instance_miou=best.scores.instance_miou,
            best_class_miou=best.scores.class_miou,
            last_category_iou=last.to_dict(taxonomy)["category_iou"],
            best_category_iou=best.to_dict(taxonomy)["category_iou"],
            train_seconds=train_seconds,
            seconds=time.perf_counter() - tic,
        )
        notes = [
            f"Best epoch ({result.best_epoch}) chosen by `{cfg.run.best_metric}` on the {record.selection}.",
            f"Both columns scored on the test split ({len(test)} shapes, {cfg.data.num_points} points each).",
            f"Backbone init: {record.init} ({record.backbone_keys_loaded} tensors loaded); seed {cfg.runtime.seed}.",
        ]
        if task.selected_on_test:
            notes.insert(1, "Selected on the test split: the best-epoch column is optimistic; trust the last epoch.")
        title = f"Part segmentation: {cfg.data.source}, {result.epochs} epochs"
        report = format_part_eval(evals, taxonomy, title=title, notes=notes)
        picture = None
        if cfg.picture:
            picture = _draw_examples(last, test, taxonomy, out / "parts.png")
    payload = {**record.to_dict(), "evaluations": {k: v.to_dict(taxonomy) for k, v in evals.items()}}
    if picture is not None:
        payload["picture"] = str(picture)
    with atomic_path(out / "result.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out / "eval.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    return record


_SUMMARY_METRICS = ("last_instance_miou", "best_instance_miou", "last_class_miou", "best_class_miou")


@dataclass
class PartSegSummary:
    """Runs over several seeds and their mean ± sample std.

    Attributes:
        group_dir: the folder holding ``seed-<s>/`` runs and the summary files.
        records: one :class:`PartSegRecord` per seed, in seed order.
        stats: ``{metric: {"mean", "std", "values"}}`` for last / best instance and class mIoU.
    """

    group_dir: Path
    records: list[PartSegRecord]
    stats: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, group_dir: Path, records: list[PartSegRecord]) -> PartSegSummary:
        """Summarise ``records`` (mean and sample std, ddof=1, of each metric)."""
        stats = {}
        for name in _SUMMARY_METRICS:
            values = [getattr(r, name) for r in records]
            mean, std = mean_std(values)
            stats[name] = {"mean": mean, "std": std, "values": values}
        return cls(group_dir, records, stats)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "group_dir": str(self.group_dir),
            "seeds": [r.seed for r in self.records],
            "stats": self.stats,
            "selection": self.records[0].selection if self.records else "",
            "selected_on_test": bool(self.records and self.records[0].selected_on_test),
            "runs": [r.to_dict() for r in self.records],
        }


def _mean_pm(stat: Mapping[str, Any]) -> str:
    return f"{100 * stat['mean']:.2f}" + ("" if stat["std"] is None else f" ± {100 * stat['std']:.2f}")


def format_part_summary(summary: PartSegSummary, title: str = "Part segmentation") -> str:
    """A Markdown report of a :class:`PartSegSummary` (mIoU in %)."""
    s, recs = summary.stats, summary.records
    lines = [
        f"# {title}",
        "",
        f"{len(recs)} seed(s): {', '.join(str(r.seed) for r in recs)}; mean ± sample std (ddof=1), in %, "
        "on the test split.",
        "",
        "| | last epoch | best epoch |",
        "|---|---|---|",
        f"| instance mIoU | {_mean_pm(s['last_instance_miou'])} | {_mean_pm(s['best_instance_miou'])} |",
        f"| class mIoU | {_mean_pm(s['last_class_miou'])} | {_mean_pm(s['best_class_miou'])} |",
        "",
        "| seed | last ins. mIoU | last cls. mIoU | best ins. mIoU | best cls. mIoU | best epoch | epochs | time (s) "
        "| run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        lines.append(
            f"| {r.seed} | {_pct(r.last_instance_miou)} | {_pct(r.last_class_miou)} | {_pct(r.best_instance_miou)} | "
            f"{_pct(r.best_class_miou)} | {r.best_epoch} | {r.epochs} | {r.seconds:.0f} | `{Path(r.run_dir).name}` |"
        )
    if recs:
        lines += ["", f"Best epoch selected on the {recs[0].selection}."]
        if recs[0].selected_on_test:
            lines.append(
                "That is the test split: the best-epoch column is optimistic; the last epoch is the one to trust."
            )
        lines.append(f"Backbone init: {recs[0].init} ({recs[0].backbone_keys_loaded} tensors loaded).")
    return "\n".join(lines) + "\n"


def _write_summary(summary: PartSegSummary, title: str) -> None:
    write_group_summary(summary.group_dir, summary.to_dict(), format_part_summary(summary, title))


def partseg_seeds(
    cfg: PartSegConfig,
    seeds: Sequence[int],
    *,
    group_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    title: str = "Part segmentation",
) -> PartSegSummary:
    """Train once per seed in ``<group>/seed-<s>/`` and summarise (``summary.json``, ``summary.md``).

    Args:
        cfg: the base config; each run uses it with ``runtime.seed`` set to the seed.
        seeds: distinct seeds, e.g. ``[0, 1, 2]``.
        group_dir: the group folder (default ``<run.out_dir>/partseg-<run.name>-<time>``).
        resume: a group folder to continue: finished seeds (with ``result.json``) are kept,
            interrupted ones resume from their last checkpoint, missing ones start.
        title: the heading of ``summary.md``.
    """
    if resume is None:
        PartSegTask(cfg).prepare()  # fail on bad data or init before making folders
    names = {f.name for f in dataclasses.fields(PartSegRecord)}
    group, records = run_seed_group(
        cfg, seeds, stage=STAGE, train=partseg_train,
        load_record=lambda saved: PartSegRecord(**{k: v for k, v in saved.items() if k in names}),
        on_record=lambda g, recs: _write_summary(PartSegSummary.of(g, recs), title),
        group_dir=group_dir, resume=resume,
    )  # fmt: skip
    if not records:
        return PartSegSummary(group, [], {})
    summary = PartSegSummary.of(group, records)
    _write_summary(summary, title)
    return summary


# ----------------------------------------------------------------------------- CLI


def default_preset(source: str | None) -> str:
    """The packaged preset when ``--config`` is not given: ``tiny`` for synthetic-parts, else ``paper``."""
    return "tiny" if source is not None and _source_kind(source) == "synthetic-parts" else "paper"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``act3d partseg train|eval`` to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        "partseg",
        help="part segmentation (ShapeNetPart, synthetic parts): train, and instance/class mIoU",
        description="Part segmentation with the student backbone (ACT_SPEC §3): blocks 4/8/12, max + mean "
        "pooling, a category embedding and 3-NN upsampling. Data: shapenetpart[:DIR] or synthetic-parts.",
    )
    sub = parser.add_subparsers(dest="partseg_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=help_handler(parser))

    tr = sub.add_parser(
        "train",
        help="train a part segmenter; report last- and best-epoch instance/class mIoU on the test split",
        description="Train a part segmenter (cross-entropy, scale & shift augmentation, AdamW + cosine). "
        "The best epoch is chosen on the val split (selection=val; --set selection=test is the reference's "
        "protocol, optimistic). Writes part_segmenter.safetensors, result.json, eval.md and parts.png.",
    )
    tr.add_argument("--data", metavar="SOURCE", default=None,
                    help="shapenetpart:DIR, shapenetpart or synthetic-parts (default: the config's)")
    tr.add_argument("--init", metavar="CKPT|scratch", default=None,
                    help="student .safetensors, Stage II run folder, classifier, or 'scratch' (default: the config's)")
    tr.add_argument("--config", dest="preset", default=None, metavar="CONFIG",
                    help="preset (tiny, paper) or a YAML file; default tiny for synthetic-parts, else paper")
    tr.add_argument("--seeds", default=None, metavar="S,S,...",
                    help="run these seeds in <group>/seed-<s>/ and report mean ± std")
    add_config_arguments(tr, STAGE)
    tr.set_defaults(func=_train_cli)

    ev = sub.add_parser(
        "eval",
        help="instance mIoU, class mIoU and per-category IoU of a part segmenter",
        description="Evaluate a part segmenter on a split; writes result.json, eval.md and parts.png.",
    )
    ev.add_argument("ckpt", metavar="CKPT", help="part_segmenter.safetensors or a partseg run folder")
    ev.add_argument("--data", metavar="SOURCE", default=None, help="data source (default: the one it was trained on)")
    ev.add_argument("--split", choices=("test", "val", "train"), default="test", help="default test")
    ev.add_argument("--batch-size", type=int, default=32, help="shapes per forward pass")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.add_argument("--picture", default=None, metavar="PNG",
                    help="where to draw a few shapes (default <out>/parts.png; 'none': no picture)")
    ev.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <ckpt folder>/eval-<time>)")
    ev.set_defaults(func=_eval_cli)


def _train_cli(args: argparse.Namespace) -> int:
    overrides: list[str] = []
    if args.data is not None:
        overrides.append(f"data.source={args.data}")
    if args.init is not None:
        overrides.append(f"model.init={args.init}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if args.resume is not None:
        if overrides:
            raise ValueError("--resume continues the saved run; drop --data/--init")
        cfg = config_from_args(PartSegConfig, args, STAGE)
        resume = Path(args.resume)
        saved = resumed_seeds(resume, "partseg")
        if saved is not None:
            summary = partseg_seeds(cfg, seeds or saved, resume=resume)
            print(format_part_summary(summary))
            print(f"group: {summary.group_dir}")
            return 0
        record = partseg_train(cfg, resume=resume)
    else:
        preset = args.preset or default_preset(args.data)
        cfg = load_config(PartSegConfig, preset, overrides + list(args.overrides), stage=STAGE)
        if seeds is not None:
            title = f"Part segmentation {cfg.data.source} (init {cfg.model.init})"
            summary = partseg_seeds(cfg, seeds, title=title)
            print(format_part_summary(summary, title))
            print(f"group: {summary.group_dir}")
            return 0
        record = partseg_train(cfg)
    if record is None:
        return 0
    print((Path(record.run_dir) / "eval.md").read_text(encoding="utf-8"))
    print(f"run: {record.run_dir}")
    return 0


def _eval_cli(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    segmenter = load_part_segmenter(args.ckpt, device)
    data = segmenter.data
    if args.data is not None:
        data = dataclasses.replace(data, source=args.data)
    cap = {"test": data.test_samples, "val": data.val_samples, "train": data.num_samples}[args.split]
    dataset = build_part_split(data, args.split, False, cap)
    taxonomy = PartTaxonomy.of(_unwrap(dataset))
    if taxonomy.category_parts != segmenter.taxonomy.category_parts:
        raise ValueError(
            f"--data {data.source}: its categories/parts ({len(taxonomy.category_names)} categories, "
            f"{taxonomy.num_parts} parts) are not the checkpoint's ({len(segmenter.taxonomy.category_names)}, "
            f"{segmenter.taxonomy.num_parts})"
        )
    ev = evaluate_part_segmenter(
        segmenter.model, dataset, segmenter.taxonomy, batch_size=args.batch_size, device=device
    )
    ckpt = Path(args.ckpt)
    base = ckpt if ckpt.is_dir() else ckpt.parent
    out_dir = Path(args.out) if args.out is not None else base / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    picture: Path | None = out_dir / "parts.png"
    if args.picture is not None:
        picture = None if args.picture.lower() == "none" else Path(args.picture)
    notes = [f"Weights: {segmenter.weights or '?'} epoch of {args.ckpt}; backbone init {segmenter.init}.",
             f"Split {args.split!r} of {data.source}: {len(dataset)} shapes, {data.num_points} points each."]
    report = format_part_eval({f"{args.split}": ev}, segmenter.taxonomy, title=f"Part segmentation: {data.source}",
                              notes=notes)
    payload: dict[str, Any] = {"ckpt": str(args.ckpt), "source": data.source, "split": args.split,
                               "init": segmenter.init, "weights": segmenter.weights, **ev.to_dict(segmenter.taxonomy)}
    if picture is not None:
        payload["picture"] = str(_draw_examples(ev, dataset, segmenter.taxonomy, picture))
    with atomic_path(out_dir / "result.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out_dir / "eval.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    print(report)
    print(f"results: {out_dir}")
    return 0
