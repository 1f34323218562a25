"""Scene segmentation (S3DIS) on the student backbone, with whole-room evaluation (ACT_SPEC §3).

One training step::

    points (B, N, 3)   a random 1 m column of a training room (N = 2048): xy relative to the
                       column centre, z from the room's floor (act3d.data.s3dis)
      model:  PartSegmentationModel(encoder, 13, num_categories=0) -> logits (B, N, 13)
              (blocks 4, 8, 12 of the backbone, max + mean pooling, 3-NN upsampling)
      loss:   class-weighted NLL, weights (max freq / freq) ** (1/3) from the label
              histogram of the training rooms; no augmentation

Evaluation protocols (``--protocol``):

- ``whole-room`` (the standard one, and the number to trust): every point of every test room
  is labelled. The room is covered by overlapping 1 m columns (stride 0.5 m); each column's
  points are split into chunks of N (every point in exactly one chunk, the last chunk padded
  with repeats that do not vote); the per-point softmax is averaged over all columns holding
  the point, then argmax. Scores over all points of the test rooms.
- ``random-columns`` (the reference's protocol): random test columns drawn as in training
  (fixed seed); scores over the *sampled* points only, not whole rooms.

Validation during training uses random test columns (cheap; ``data.val_samples`` of them);
the run ends with the configured final evaluation of the last-epoch weights.

Data sources: ``s3dis[:ROOT]`` (either S3DIS layout; ``data.train_areas`` /
``data.test_areas``, default 1,2,3,4,6 / 5) and ``synthetic-rooms``
(:mod:`act3d.data.rooms`). Initialisation: ``scratch``, a student ``.safetensors`` or a
Stage II run folder (also a classifier: its backbone). The encoder size comes from the
checkpoint; the grouping (``model.num_groups``, 128 for 2048 points) from this config.

Files: an engine run folder plus ``segmenter.safetensors`` (last epoch; its metadata holds
everything ``act3d segment eval`` needs), ``segmenter-best.safetensors`` (best
``val/miou`` on random test columns: selected on the test area, as the reference does),
``result.json``, ``eval.md`` and ``room.png`` (a test room coloured by prediction beside
the ground truth).

CLI::

    act3d segment train --data s3dis:ROOT|synthetic-rooms --init CKPT|scratch [--config tiny]
                        [--set a.b=v] [--resume RUN_DIR]
    act3d segment eval CKPT [--data SOURCE] [--protocol whole-room|random-columns|both]
                        [--areas 5] [--picture room.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from act3d.data.s3dis import (
    DEFAULT_TEST_AREAS,
    DEFAULT_TRAIN_AREAS,
    S3DIS_CLASSES,
    Z_ORIGINS,
    RandomColumns,
    Room,
    column_chunks,
    column_inputs,
    label_histogram,
    label_weights,
    load_s3dis,
    room_columns,
)
from act3d.eval.segmentation import SegScores, confusion_matrix, segmentation_scores
from act3d.models.partseg import PartSegmentationModel
from act3d.models.student import ENCODER_PRESETS, EncoderConfig
from act3d.train.common import init_backbone
from act3d.train.engine import Task, fit, resolve_device

__all__ = [
    "PROTOCOLS",
    "ROOM_SOURCES",
    "RoomPrediction",
    "SEGMENTER_FORMAT",
    "STAGE",
    "SceneDataConfig",
    "SceneEval",
    "SceneModelConfig",
    "SegmentConfig",
    "SegmentTask",
    "Segmenter",
    "build_segmenter",
    "evaluate_random_columns",
    "evaluate_whole_rooms",
    "format_scene_eval",
    "load_rooms",
    "load_segmenter",
    "predict_room",
    "register",
    "render_room_segmentation",
    "save_segmenter",
    "segment_train",
]

STAGE = "segment"
SEGMENTER_FORMAT = "act3d.scene_segmenter"
PROTOCOLS = ("whole-room", "random-columns")
ROOM_SOURCES = ("s3dis", "synthetic-rooms")
_FINAL_EVALS = ("whole-room", "random-columns", "both", "none")


# ----------------------------------------------------------------------------- config


@dataclass
class SceneDataConfig:
    """Rooms and how columns are cut from them.

    Attributes:
        source: ``s3dis:ROOT``, ``s3dis`` (root ``$ACT3D_DATA_ROOT/S3DIS`` or ``./data/S3DIS``)
            or ``synthetic-rooms``.
        cache_dir: where parsed raw S3DIS rooms are cached (default
            :func:`act3d.data.s3dis.default_cache_dir`).
        train_areas, test_areas: S3DIS areas (disjoint).
        num_points: points per column sample (2048).
        block_size: column side in metres (1.0).
        min_points: fewest points of a training column (1024).
        z_origin: ``"room_min"`` (z from the room's lowest point) or ``"as_is"``.
        sample_rate: training samples per epoch = points of the training rooms * rate /
            num_points (the reference's 1.0), unless ``train_samples`` is set.
        train_samples: training columns per epoch (overrides ``sample_rate``).
        val_samples: random test columns scored at each validation (``None``: the
            reference's count, points / num_points).
        eval_stride: column stride of whole-room evaluation (< ``block_size``).
        synthetic_train_rooms, synthetic_test_rooms, synthetic_density, synthetic_seed:
            the ``synthetic-rooms`` source (rooms per split, points per m², seed).
    """

    source: str = "synthetic-rooms"
    cache_dir: str | None = None
    train_areas: list[int] = field(default_factory=lambda: list(DEFAULT_TRAIN_AREAS))
    test_areas: list[int] = field(default_factory=lambda: list(DEFAULT_TEST_AREAS))
    num_points: int = 2048
    block_size: float = 1.0
    min_points: int = 1024
    z_origin: Literal["room_min", "as_is"] = "room_min"
    sample_rate: float = 1.0
    train_samples: int | None = None
    val_samples: int | None = 512
    eval_stride: float = 0.5
    synthetic_train_rooms: int = 24
    synthetic_test_rooms: int = 6
    synthetic_density: float = 600.0
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        kind = self.source.split(":", 1)[0].lower()
        if kind not in ROOM_SOURCES:
            raise ValueError(f"unknown data.source {self.source!r}; valid choices: 's3dis[:ROOT]', 'synthetic-rooms'")
        if self.z_origin not in Z_ORIGINS:
            raise ValueError(f"unknown data.z_origin {self.z_origin!r}; valid choices: {list(Z_ORIGINS)}")
        overlap = sorted(set(self.train_areas) & set(self.test_areas))
        if overlap:
            raise ValueError(f"data.train_areas and data.test_areas overlap: {overlap}")
        if not self.train_areas or not self.test_areas:
            raise ValueError("data.train_areas and data.test_areas must not be empty")
        if self.num_points < 1 or self.min_points < 0 or self.block_size <= 0:
            raise ValueError("data.num_points must be >= 1, data.min_points >= 0 and data.block_size > 0")
        if not 0 < self.eval_stride <= self.block_size:
            raise ValueError(f"data.eval_stride must be in (0, data.block_size], got {self.eval_stride}")
        for key in ("train_samples", "val_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"data.{key} must be positive or null, got {value}")
        if self.synthetic_train_rooms < 1 or self.synthetic_test_rooms < 1 or self.synthetic_density <= 0:
            raise ValueError("data.synthetic_train_rooms, synthetic_test_rooms and synthetic_density must be positive")


@dataclass
class SceneModelConfig:
    """The segmentation model.

    Attributes:
        init: ``"scratch"``, a student ``.safetensors``, a Stage II run folder or a classifier.
        encoder: size preset from scratch (a checkpoint brings its own size).
        num_groups, group_size: patches per column sample (128 x 32 for 2048 points).
        drop_path: largest stochastic-depth rate of the backbone.
        propagation_dims: widths of the two per-point propagation convs (``None``: 4D, 1024).
        head_dims: widths of the two hidden convs of the head.
        dropout: dropout in the head.
    """

    init: str = "scratch"
    encoder: Literal["paper", "small", "tiny"] = "paper"
    num_groups: int = 128
    group_size: int = 32
    drop_path: float = 0.1
    propagation_dims: tuple[int, int] | None = None
    head_dims: tuple[int, int] = (512, 256)
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_PRESETS:
            raise ValueError(f"unknown model.encoder {self.encoder!r}; valid choices: {list(ENCODER_PRESETS)}")
        if not self.init:
            raise ValueError("model.init must be 'scratch' or a checkpoint path")


def _default_optim() -> OptimConfig:
    return OptimConfig(lr=2e-4, weight_decay=0.05, epochs=60, warmup_epochs=5, batch_size=32, grad_clip=10.0)


def _default_run() -> RunConfig:
    return RunConfig(name="seg", best_metric="val/miou", best_mode="max")


@dataclass
class SegmentConfig:
    """Everything ``act3d segment train`` runs; defaults follow ACT_SPEC §3.

    Attributes:
        data: see :class:`SceneDataConfig`.
        model: see :class:`SceneModelConfig`.
        class_weights: ``"cbrt"`` ((max freq / freq) ** (1/3), the reference's) or ``"none"``.
        final_eval: protocol(s) run on the test rooms after training: ``"whole-room"``,
            ``"random-columns"``, ``"both"`` or ``"none"``.
        eval_batch_size: column chunks per forward pass in evaluation.
        picture: draw ``room.png`` (a test room, prediction beside ground truth).
        optim, runtime, run: the engine's sections.
    """

    data: SceneDataConfig = field(default_factory=SceneDataConfig)
    model: SceneModelConfig = field(default_factory=SceneModelConfig)
    class_weights: Literal["cbrt", "none"] = "cbrt"
    final_eval: Literal["whole-room", "random-columns", "both", "none"] = "whole-room"
    eval_batch_size: int = 16
    picture: bool = True
    optim: OptimConfig = field(default_factory=_default_optim)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=_default_run)

    def __post_init__(self) -> None:
        if self.class_weights not in ("cbrt", "none"):
            raise ValueError(f"unknown class_weights {self.class_weights!r}; valid choices: ['cbrt', 'none']")
        if self.final_eval not in _FINAL_EVALS:
            raise ValueError(f"unknown final_eval {self.final_eval!r}; valid choices: {list(_FINAL_EVALS)}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size}")


# ----------------------------------------------------------------------------- data


def _s3dis_root(source: str) -> str:
    _, _, rest = source.partition(":")
    if rest:
        return rest
    base = os.environ.get("ACT3D_DATA_ROOT") or os.path.join(".", "data")
    return os.path.join(base, "S3DIS")


def load_rooms(
    data: SceneDataConfig, split: Literal["train", "test"], areas: Sequence[int] | None = None
) -> list[Room]:
    """The rooms of one split of ``data.source``.

    Args:
        data: the data config.
        split: ``"train"`` (``data.train_areas``) or ``"test"`` (``data.test_areas``).
        areas: S3DIS areas to use instead of the split's.

    Returns:
        The rooms (S3DIS sorted by area and name; synthetic by index).
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid choices: ['train', 'test']")
    kind, _, rest = data.source.partition(":")
    kind = kind.lower()
    if kind == "synthetic-rooms":
        if rest:
            raise ValueError(f"data source 'synthetic-rooms' takes no parameter, got {data.source!r}")
        from act3d.data.rooms import synthetic_rooms

        count = data.synthetic_train_rooms if split == "train" else data.synthetic_test_rooms
        return synthetic_rooms(split, count, seed=data.synthetic_seed, density=data.synthetic_density)
    if kind == "s3dis":
        chosen = areas if areas is not None else (data.train_areas if split == "train" else data.test_areas)
        return load_s3dis(_s3dis_root(data.source), chosen, data.cache_dir)
    raise ValueError(f"unknown data source {data.source!r}; valid choices: 's3dis[:ROOT]', 'synthetic-rooms'")


def _random_columns(
    data: SceneDataConfig, rooms: Sequence[Room], train: bool, num_samples: int | None
) -> RandomColumns:
    return RandomColumns(
        rooms,
        data.num_points,
        block_size=data.block_size,
        min_points=data.min_points,
        num_samples=num_samples,
        sample_rate=data.sample_rate,
        z_origin=data.z_origin,
        train=train,
        seed=0,
    )


# ----------------------------------------------------------------------------- model and files


def build_segmenter(
    model_cfg: SceneModelConfig, encoder: EncoderConfig, num_classes: int = len(S3DIS_CLASSES)
) -> PartSegmentationModel:
    """The scene segmentation model: the part-segmentation head without a category branch."""
    return PartSegmentationModel(
        encoder,
        num_parts=num_classes,
        num_categories=0,
        propagation_dims=None if model_cfg.propagation_dims is None else tuple(model_cfg.propagation_dims),
        head_dims=tuple(model_cfg.head_dims),
        dropout=model_cfg.dropout,
    )


@dataclass
class Segmenter:
    """A loaded scene segmenter.

    Attributes:
        model: the model, in eval mode.
        class_names: the class names (13 for S3DIS).
        data: the data settings it was trained with (columns, source, areas).
        model_cfg: its :class:`SceneModelConfig`.
        init: where its backbone started (``scratch`` or a file).
    """

    model: PartSegmentationModel
    class_names: list[str]
    data: SceneDataConfig
    model_cfg: SceneModelConfig
    init: str


def save_segmenter(
    model: PartSegmentationModel,
    path: str | os.PathLike[str],
    *,
    data: SceneDataConfig,
    model_cfg: SceneModelConfig,
    init: str,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write a segmenter's weights and everything :func:`load_segmenter` needs (metadata:
    ``format``, ``encoder_config``, ``model_config``, ``data_config``, ``class_names``, ``init``)."""
    if not isinstance(model, PartSegmentationModel) or model.category_embed is not None:
        raise ValueError("model must be a PartSegmentationModel without a category branch")
    meta = {
        "format": SEGMENTER_FORMAT,
        "format_version": "1",
        "encoder_config": json.dumps(model.backbone.config.to_dict(), sort_keys=True),
        "model_config": json.dumps(to_dict(model_cfg), sort_keys=True),
        "data_config": json.dumps(to_dict(data), sort_keys=True),
        "class_names": json.dumps(list(S3DIS_CLASSES[: model.num_parts])),
        "init": init,
        **dict(extra or {}),
    }
    return save_weights(model.state_dict(), path, meta)


def load_segmenter(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Segmenter:
    """Load a segmenter written by :func:`save_segmenter` (or a segment run folder).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: another format, bad metadata, or keys/shapes that do not match, naming the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "segmenter.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no segmenter at {path} (expected segmenter.safetensors or a segment run folder)")
    meta = read_weights_metadata(path)
    if meta.get("format") != SEGMENTER_FORMAT:
        raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected {SEGMENTER_FORMAT!r}")
    try:
        encoder = EncoderConfig.from_dict(json.loads(meta["encoder_config"]))
        model_cfg = config_from_dict(SceneModelConfig, json.loads(meta["model_config"]), str(path))
        data = config_from_dict(SceneDataConfig, json.loads(meta["data_config"]), str(path))
        class_names = list(json.loads(meta["class_names"]))
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: bad segmenter metadata ({err})") from err
    model = build_segmenter(model_cfg, encoder, len(class_names))
    state = load_weights(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: segmenter keys do not match; missing: {missing}; unexpected: {unexpected}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{path}: shape mismatch for {key!r}: file {tuple(value.shape)}, model {tuple(own[key].shape)}"
            )
    model.load_state_dict(state)
    return Segmenter(model.to(device).eval(), class_names, data, model_cfg, meta.get("init", ""))


# ----------------------------------------------------------------------------- evaluation


@dataclass
class SceneEval:
    """Scores of one evaluation protocol.

    Attributes:
        protocol: ``"whole-room"`` or ``"random-columns"``.
        scores: mIoU, mAcc, OA and per-class IoU / accuracy (fractions).
        confusion: (C, C) int64 counts, rows ground truth.
        points: points scored (whole-room: every point of the rooms).
        rooms: rooms evaluated.
        columns: model inputs run (column chunks or random columns).
        seconds: wall time.
        predictions: whole-room only: per room, (N,) uint8 predicted classes.
    """

    protocol: str
    scores: SegScores
    confusion: np.ndarray
    points: int
    rooms: int
    columns: int
    seconds: float
    predictions: list[np.ndarray] | None = None

    def to_dict(self, class_names: Sequence[str] = S3DIS_CLASSES) -> dict[str, Any]:
        """JSON-ready summary (no predictions)."""
        s = self.scores
        return {
            "protocol": self.protocol,
            "miou": s.miou,
            "macc": s.macc,
            "oa": s.oa,
            "iou": {n: (None if math.isnan(v) else float(v)) for n, v in zip(class_names, s.iou)},
            "acc": {n: (None if math.isnan(v) else float(v)) for n, v in zip(class_names, s.acc)},
            "points": self.points,
            "rooms": self.rooms,
            "columns": self.columns,
            "seconds": self.seconds,
            "confusion": self.confusion.tolist(),
        }


@dataclass
class RoomPrediction:
    """Whole-room prediction of one room.

    Attributes:
        labels: (N,) int64 predicted class of every point.
        probs: (N, C) float32 softmax averaged over the columns holding each point.
        votes: (N,) int64 number of columns that voted for each point (>= 1).
        chunks: model inputs run.
    """

    labels: np.ndarray
    probs: np.ndarray
    votes: np.ndarray
    chunks: int


def _forward_probs(model: nn.Module, inputs: list[np.ndarray], device: torch.device) -> Tensor:
    x = torch.from_numpy(np.stack(inputs)).to(device)
    return torch.softmax(model(x).float(), dim=-1).cpu()  # (B, N, C)


@torch.no_grad()
def predict_room(
    model: nn.Module,
    points: np.ndarray,
    *,
    num_classes: int,
    num_points: int,
    block_size: float = 1.0,
    stride: float = 0.5,
    z_origin: str = "room_min",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> RoomPrediction:
    """Label every point of a room (the whole-room protocol, see the module docstring).

    Args:
        model: maps (B, num_points, 3) column inputs to (B, num_points, C) logits; run in
            eval mode (its mode is restored afterwards).
        points: (N, 3) room xyz.
        num_classes: C.
        num_points: points per model input.
        block_size, stride: the column grid (stride <= block_size).
        z_origin: ``"room_min"`` or ``"as_is"`` (as in training).
        batch_size: chunks per forward pass.
        device: where to run (default: the model's).
        seed: chunk shuffling and padding.

    Returns:
        A :class:`RoomPrediction`; every point gets exactly one predicted label.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"points must be a non-empty (N, 3) array, got shape {points.shape}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if z_origin not in Z_ORIGINS:
        raise ValueError(f"unknown z_origin {z_origin!r}; valid choices: {list(Z_ORIGINS)}")
    z_offset = float(points[:, 2].min()) if z_origin == "room_min" else 0.0
    rng = np.random.default_rng([int(seed), 0xE7A1])
    total = len(points)
    prob_sum = torch.zeros(total, num_classes, dtype=torch.float32)
    votes = np.zeros(total, dtype=np.int64)
    was_training = model.training
    model.eval()
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    chunks = 0

    def flush() -> None:
        probs = _forward_probs(model, [p[2] for p in pending], device)
        for (idx, valid, _), prob in zip(pending, probs):
            keep = torch.from_numpy(idx[valid])
            prob_sum.index_add_(0, keep, prob[torch.from_numpy(valid)])
            votes[idx[valid]] += 1  # the valid entries of a chunk are distinct points
        pending.clear()

    try:
        for center, members in room_columns(points, block_size, stride):
            for idx, valid in column_chunks(members, num_points, rng):
                pending.append((idx, valid, column_inputs(points[idx], center, z_offset)))
                chunks += 1
                if len(pending) == batch_size:
                    flush()
        if pending:
            flush()
    finally:
        model.train(was_training)
    if (votes == 0).any():
        raise RuntimeError(f"{int((votes == 0).sum())} point(s) were not covered by any column")
    probs = (prob_sum / torch.from_numpy(votes).unsqueeze(1).float()).numpy()
    return RoomPrediction(prob_sum.argmax(dim=1).numpy().astype(np.int64), probs, votes, chunks)


def evaluate_whole_rooms(
    model: nn.Module,
    rooms: Sequence[Room],
    *,
    num_points: int,
    block_size: float = 1.0,
    stride: float = 0.5,
    z_origin: str = "room_min",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_classes: int = len(S3DIS_CLASSES),
    keep_predictions: bool = True,
) -> SceneEval:
    """Whole-room scores over all points of ``rooms`` (see :func:`predict_room`)."""
    if not rooms:
        raise ValueError("no rooms to evaluate")
    tic = time.perf_counter()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    predictions, chunks, points = [], 0, 0
    for i, room in enumerate(rooms):
        pred = predict_room(
            model, room.points, num_classes=num_classes, num_points=num_points, block_size=block_size,
            stride=stride, z_origin=z_origin, batch_size=batch_size, device=device, seed=i,
        )
        confusion += confusion_matrix(pred.labels, room.labels, num_classes)
        chunks += pred.chunks
        points += len(room)
        if keep_predictions:
            predictions.append(pred.labels.astype(np.uint8))
    return SceneEval(
        "whole-room", segmentation_scores(confusion), confusion, points, len(rooms), chunks,
        time.perf_counter() - tic, predictions if keep_predictions else None,
    )


@torch.no_grad()
def evaluate_random_columns(
    model: nn.Module,
    rooms: Sequence[Room],
    *,
    num_points: int,
    block_size: float = 1.0,
    min_points: int = 1024,
    z_origin: str = "room_min",
    num_samples: int | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_classes: int = len(S3DIS_CLASSES),
    seed: int = 0,
) -> SceneEval:
    """The reference's protocol: random test columns (fixed seed), scored on the sampled
    points only. ``num_samples`` defaults to the reference's count (points / num_points)."""
    tic = time.perf_counter()
    columns = RandomColumns(
        rooms, num_points, block_size=block_size, min_points=min_points, num_samples=num_samples,
        z_origin=z_origin, train=False, seed=seed,
    )
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    try:
        for start in range(0, len(columns), batch_size):
            items = [columns[i] for i in range(start, min(start + batch_size, len(columns)))]
            x = torch.stack([it["points"] for it in items]).to(device)
            seg = torch.stack([it["seg"] for it in items])
            pred = model(x).argmax(dim=-1).cpu()
            confusion += torch.bincount((seg * num_classes + pred).reshape(-1), minlength=num_classes * num_classes)
    finally:
        model.train(was_training)
    conf = confusion.reshape(num_classes, num_classes).numpy()
    return SceneEval(
        "random-columns", segmentation_scores(conf), conf, int(conf.sum()), len(rooms), len(columns),
        time.perf_counter() - tic,
    )


_PROTOCOL_NOTES = {
    "whole-room": "every point of every test room labelled: overlapping {block:g} m columns, stride {stride:g} m, "
    "softmax averaged over the columns holding a point",
    "random-columns": "the reference's protocol: {columns} random {block:g} m columns of {n} sampled points; "
    "scores over the sampled points only, NOT whole rooms",
}


def format_scene_eval(evals: Sequence[SceneEval], class_names: Sequence[str] = S3DIS_CLASSES, *, block: float = 1.0,
                      stride: float = 0.5, num_points: int = 2048, title: str = "Scene segmentation") -> str:
    """A Markdown report: one row per protocol (mIoU, mAcc, OA in %) and per-class IoU."""
    lines = [f"# {title}", "", "| protocol | mIoU | mAcc | OA | points scored | rooms |", "|---|---|---|---|---|---|"]
    for ev in evals:
        s = ev.scores
        scores = f"{100 * s.miou:.2f} | {100 * s.macc:.2f} | {100 * s.oa:.2f}"
        lines.append(f"| {ev.protocol} | {scores} | {ev.points} | {ev.rooms} |")
    lines += ["", "| class | " + " | ".join(ev.protocol + " IoU" for ev in evals) + " |", "|---|" + "---|" * len(evals)]
    for c, name in enumerate(class_names):
        cells = ["-" if math.isnan(ev.scores.iou[c]) else f"{100 * ev.scores.iou[c]:.2f}" for ev in evals]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for ev in evals:
        note = _PROTOCOL_NOTES[ev.protocol].format(block=block, stride=stride, columns=ev.columns, n=num_points)
        lines.append(f"- **{ev.protocol}**: {note} ({ev.seconds:.1f} s).")
    lines.append("- mIoU averages the classes present in ground truth or prediction; '-' marks a class in neither.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- picture

_PALETTE = np.array([
    (0.85, 0.85, 0.80), (0.55, 0.42, 0.32), (0.70, 0.70, 0.66), (0.95, 0.75, 0.30), (0.50, 0.50, 0.95),
    (0.35, 0.75, 0.95), (0.75, 0.35, 0.10), (0.95, 0.45, 0.45), (0.55, 0.25, 0.80), (0.95, 0.20, 0.55),
    (0.20, 0.55, 0.25), (0.10, 0.10, 0.10), (0.45, 0.85, 0.45),
])  # fmt: skip


def render_room_segmentation(
    points: np.ndarray,
    labels: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] = S3DIS_CLASSES,
    title: str = "",
    hide: Sequence[str] = ("ceiling",),
    max_points: int = 150_000,
    dpi: int = 110,
) -> Path:
    """Top-down PNG of a room: ground truth, prediction and errors side by side.

    Args:
        points: (N, 3) room xyz (z up).
        labels: (N,) ground-truth classes.
        pred: (N,) predicted classes.
        path: the PNG to write.
        class_names: names for the legend.
        title: figure title.
        hide: classes (by ground truth) left out so the view reaches the floor.
        max_points: subsample to at most this many points (seeded).
        dpi: resolution.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    points, labels, pred = np.asarray(points), np.asarray(labels).astype(np.int64), np.asarray(pred).astype(np.int64)
    if not (len(points) == len(labels) == len(pred)):
        raise ValueError(
            f"points, labels and pred must have the same length, got {len(points)}, {len(labels)}, {len(pred)}"
        )
    hidden = [list(class_names).index(n) for n in hide if n in class_names]
    keep = np.flatnonzero(~np.isin(labels, hidden))
    if keep.size > max_points:
        keep = np.sort(np.random.default_rng(0).choice(keep, max_points, replace=False))
    keep = keep[np.argsort(points[keep, 2], kind="stable")]
    xy = points[keep, :2] - points[:, :2].min(axis=0)
    palette = _PALETTE
    if len(class_names) > len(_PALETTE):
        palette = plt.get_cmap("tab20")(np.arange(len(class_names)))[:, :3]
    wrong = pred[keep] != labels[keep]
    span = np.ptp(xy, axis=0) + 1e-6
    panel_w = 4.2
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_w + 1.8, panel_w * span[1] / span[0] + 1.0), squeeze=False)
    size = max(0.2, min(3.0, 6e4 / max(len(keep), 1)))
    for ax, colors, name in (
        (axes[0, 0], palette[labels[keep]], "ground truth"),
        (axes[0, 1], palette[pred[keep]], "prediction"),
        (
            axes[0, 2],
            np.where(wrong[:, None], [[0.9, 0.1, 0.1]], [[0.8, 0.8, 0.8]]),
            f"errors (red: {100 * wrong.mean():.1f}% of the points shown)",
        ),
    ):
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=size, linewidths=0, rasterized=True)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=palette[i], label=n) for i, n in enumerate(class_names) if i not in hidden]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    shown = f" ({', '.join(hide)} hidden; top-down)" if hidden else " (top-down)"
    fig.suptitle((title + shown).strip(), fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.88, top=0.88, bottom=0.02, wspace=0.04)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the task


class SegmentTask(Task):
    """Scene segmentation as an engine :class:`~act3d.train.engine.Task`.

    Args:
        cfg: the run's config.
        train_rooms, test_rooms: rooms to use instead of loading ``cfg.data.source``.
    """

    def __init__(self, cfg: SegmentConfig, train_rooms: Sequence[Room] | None = None,
                 test_rooms: Sequence[Room] | None = None) -> None:
        self.cfg = cfg
        self._train_rooms = list(train_rooms) if train_rooms is not None else None
        self._test_rooms = list(test_rooms) if test_rooms is not None else None
        self._train_set: RandomColumns | None = None
        self._val_set: RandomColumns | None = None
        self._weights: Tensor | None = None
        self.load_report: dict[str, Any] = {}

    def train_rooms(self) -> list[Room]:
        """The training rooms (loaded once)."""
        if self._train_rooms is None:
            self._train_rooms = load_rooms(self.cfg.data, "train")
        return self._train_rooms

    def test_rooms(self) -> list[Room]:
        """The test rooms (loaded once)."""
        if self._test_rooms is None:
            self._test_rooms = load_rooms(self.cfg.data, "test")
        return self._test_rooms

    @property
    def class_counts(self) -> np.ndarray:
        """(13,) points per class over the training rooms."""
        return label_histogram(self.train_rooms())

    @property
    def class_weights(self) -> Tensor:
        """(13,) loss weights: (max freq / freq) ** (1/3), or ones with ``class_weights="none"``."""
        if self._weights is None:
            power = 1.0 / 3.0 if self.cfg.class_weights == "cbrt" else 0.0
            self._weights = torch.from_numpy(label_weights(self.class_counts, power))
        return self._weights

    def train_dataset(self) -> RandomColumns:
        if self._train_set is None:
            d = self.cfg.data
            self._train_set = _random_columns(d, self.train_rooms(), True, d.train_samples)
        return self._train_set

    def val_dataset(self) -> RandomColumns:
        if self._val_set is None:
            d = self.cfg.data
            self._val_set = _random_columns(d, self.test_rooms(), False, d.val_samples)
        return self._val_set

    def build_model(self) -> PartSegmentationModel:
        m = self.cfg.model
        config, state, origin = init_backbone(
            m.init, m.encoder, num_groups=m.num_groups, group_size=m.group_size, drop_path=m.drop_path
        )
        model = build_segmenter(self.cfg.model, config)
        if state is not None:
            report = model.load_backbone(state, strict=True)
            self.load_report = {"init": origin, "loaded": len(report.loaded)}
        else:
            self.load_report = {"init": "scratch", "loaded": 0}
        return model

    def _loss(self, logits: Tensor, seg: Tensor, reduction: str = "mean") -> Tensor:
        classes = logits.shape[-1]
        log_probs = F.log_softmax(logits.float().reshape(-1, classes), dim=-1)
        return F.nll_loss(log_probs, seg.reshape(-1), weight=self.class_weights.to(logits.device), reduction=reduction)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(batch["points"])  # (B, N, C)
        loss = self._loss(logits, batch["seg"])
        acc = (logits.argmax(dim=-1) == batch["seg"]).float().mean()
        return loss, {"acc": acc.detach()}

    def validation_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        seg = batch["seg"]
        logits = model(batch["points"]).float()
        classes = logits.shape[-1]
        pred = logits.argmax(dim=-1)
        confusion = torch.bincount((seg * classes + pred).reshape(-1), minlength=classes * classes)
        weights = self.class_weights.to(logits.device)[seg.reshape(-1)]
        return {
            "confusion": confusion.reshape(classes, classes),
            "loss_sum": self._loss(logits, seg, reduction="sum"),
            "weight_sum": weights.sum(),
        }

    def validation_metrics(self, sums: Mapping[str, Tensor]) -> dict[str, float]:
        scores = segmentation_scores(sums["confusion"].cpu().numpy())
        return {
            "loss": float(sums["loss_sum"]) / max(float(sums["weight_sum"]), 1e-12),
            "miou": scores.miou,
            "macc": scores.macc,
            "oa": scores.oa,
        }

    def on_fit_end(self, model: nn.Module, run_dir: Path) -> None:
        assert isinstance(model, PartSegmentationModel)
        init = str(self.load_report.get("init", self.cfg.model.init))
        common = dict(data=self.cfg.data, model_cfg=self.cfg.model, init=init)
        save_segmenter(model, run_dir / "segmenter.safetensors", extra={"weights": "last"}, **common)
        best = run_dir / "checkpoints" / "best.safetensors"
        if best.is_file():
            copy = build_segmenter(self.cfg.model, model.backbone.config)
            copy.load_state_dict(load_weights(best))
            save_segmenter(copy, run_dir / "segmenter-best.safetensors", extra={"weights": "best"}, **common)


# ----------------------------------------------------------------------------- running


def _protocols(final_eval: str) -> tuple[str, ...]:
    if final_eval == "both":
        return PROTOCOLS
    if final_eval == "none":
        return ()
    if final_eval in PROTOCOLS:
        return (final_eval,)
    raise ValueError(f"unknown protocol {final_eval!r}; valid choices: {list(_FINAL_EVALS)}")


def _run_protocols(segmenter: Segmenter, rooms: Sequence[Room], protocols: Sequence[str], *, stride: float,
                   batch_size: int, device: torch.device, num_samples: int | None) -> list[SceneEval]:
    d = segmenter.data
    out = []
    for protocol in protocols:
        if protocol == "whole-room":
            out.append(evaluate_whole_rooms(
                segmenter.model, rooms, num_points=d.num_points, block_size=d.block_size, stride=stride,
                z_origin=d.z_origin, batch_size=batch_size, device=device, num_classes=len(segmenter.class_names),
            ))
        else:
            out.append(evaluate_random_columns(
                segmenter.model, rooms, num_points=d.num_points, block_size=d.block_size, min_points=d.min_points,
                z_origin=d.z_origin, num_samples=num_samples, batch_size=batch_size, device=device,
                num_classes=len(segmenter.class_names),
            ))
    return out


def _write_outputs(out_dir: Path, evals: Sequence[SceneEval], segmenter: Segmenter, rooms: Sequence[Room], *,
                   stride: float, picture: Path | None, title: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    d = segmenter.data
    report = format_scene_eval(evals, segmenter.class_names, block=d.block_size, stride=stride,
                               num_points=d.num_points, title=title)
    result = {**extra, "evaluations": {ev.protocol: ev.to_dict(segmenter.class_names) for ev in evals}}
    whole = next((ev for ev in evals if ev.predictions), None)
    if picture is not None and whole is not None:
        room = rooms[0]
        render_room_segmentation(room.points, room.labels, whole.predictions[0], picture,
                                 class_names=segmenter.class_names,
                                 title=f"{room.name}: whole-room prediction")
        result["picture"] = str(picture)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out_dir / "eval.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    result["report"] = report
    return result


def segment_train(
    cfg: SegmentConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    train_rooms: Sequence[Room] | None = None,
    test_rooms: Sequence[Room] | None = None,
) -> dict[str, Any]:
    """Train a scene segmenter, then evaluate its last-epoch weights on the test rooms.

    Writes ``segmenter.safetensors``, ``result.json``, ``eval.md`` and (``cfg.picture``)
    ``room.png`` into the run folder.

    Returns:
        The ``result.json`` content plus ``"report"`` (the Markdown of ``eval.md``).
    """
    task = SegmentTask(cfg, train_rooms, test_rooms)
    tic = time.perf_counter()
    result = fit(task, cfg, stage=STAGE, run_dir=run_dir, resume=resume)
    train_seconds = time.perf_counter() - tic
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 evaluates and writes
        return {"run_dir": str(result.run_dir), "report": ""}
    device = resolve_device(cfg.runtime.device)
    segmenter = load_segmenter(result.run_dir / "segmenter.safetensors", device)
    rooms = task.test_rooms()
    evals = _run_protocols(segmenter, rooms, _protocols(cfg.final_eval), stride=cfg.data.eval_stride,
                           batch_size=cfg.eval_batch_size, device=device, num_samples=cfg.data.val_samples)
    extra = {
        "run_dir": str(result.run_dir),
        "init": segmenter.init,
        "backbone_keys_loaded": int(task.load_report.get("loaded", 0)),
        "source": cfg.data.source,
        "train_rooms": len(task.train_rooms()),
        "test_rooms": [r.name for r in rooms],
        "epochs": result.epochs,
        "steps": result.steps,
        "train_seconds": train_seconds,
        "weights": "last epoch",
        "class_weights": task.class_weights.tolist(),
        "best_epoch_val": {
            "epoch": result.best_epoch,
            **{k: v for k, v in result.best.items() if k.startswith("val/")},
        },
    }
    title = f"Scene segmentation: {cfg.data.source}, init {segmenter.init}, last epoch ({result.epochs})"
    picture = result.run_dir / "room.png" if cfg.picture else None
    return _write_outputs(result.run_dir, evals, segmenter, rooms, stride=cfg.data.eval_stride, picture=picture,
                          title=title, extra=extra)


# ----------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``act3d segment train|eval`` to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        "segment",
        help="scene segmentation (S3DIS, synthetic rooms): train, and whole-room evaluation",
        description="Scene segmentation with the student backbone and the part-segmentation head "
        "(ACT_SPEC §3). Data: s3dis[:ROOT] (raw Annotations/ layout or Area_<a>_<room>.npy files) "
        "or synthetic-rooms.",
    )
    sub = parser.add_subparsers(dest="segment_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=help_handler(parser))

    tr = sub.add_parser(
        "train",
        help="train on random 1 m columns, then evaluate whole test rooms",
        description="Train a scene segmenter on random 1 m columns of the training rooms (class-weighted "
        "NLL), validate on random test columns, then label every point of the test rooms with "
        "overlapping columns. Writes segmenter.safetensors, result.json, eval.md and room.png.",
    )
    tr.add_argument("--data", metavar="SOURCE", default=None,
                    help="s3dis:ROOT, s3dis or synthetic-rooms (default: the config's)")
    tr.add_argument("--init", metavar="CKPT|scratch", default=None,
                    help="student .safetensors, Stage II run folder, or 'scratch' (default: the config's)")
    tr.add_argument("--config", dest="preset", default=None, metavar="CONFIG",
                    help="preset (tiny, paper) or a YAML file; default paper")
    add_config_arguments(tr, STAGE)
    tr.set_defaults(func=_train_cli)

    ev = sub.add_parser(
        "eval",
        help="mIoU, mAcc, OA and per-class IoU of a segmenter on test rooms",
        description="Evaluate a segmenter. whole-room labels every point (overlapping columns, softmax "
        "averaged); random-columns is the reference's protocol (sampled points of random columns only).",
    )
    ev.add_argument("ckpt", metavar="CKPT", help="segmenter.safetensors or a segment run folder")
    ev.add_argument("--data", metavar="SOURCE", default=None, help="data source (default: the one it was trained on)")
    ev.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="whole-room", help="default whole-room")
    ev.add_argument("--areas", default=None, metavar="A,B", help="S3DIS areas to evaluate (default: the test areas)")
    ev.add_argument("--stride", type=float, default=None, help="whole-room column stride in metres (default 0.5)")
    ev.add_argument("--samples", type=int, default=None,
                    help="random-columns: columns drawn (default: the reference's count, points / num_points)")
    ev.add_argument("--batch-size", type=int, default=16, help="column chunks per forward pass")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.add_argument("--picture", default=None, metavar="PNG",
                    help="where to draw the first room (default <out>/room.png; 'none': no picture)")
    ev.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <ckpt folder>/eval-<time>)")
    ev.set_defaults(func=_eval_cli)


def _train_cli(args: argparse.Namespace) -> int:
    overrides: list[str] = []
    if args.data is not None:
        overrides.append(f"data.source={args.data}")
    if args.init is not None:
        overrides.append(f"model.init={args.init}")
    if args.resume is not None:
        if overrides:
            raise ValueError("--resume continues the saved run; drop --data/--init")
        cfg = config_from_args(SegmentConfig, args, STAGE)
    else:
        cfg = load_config(SegmentConfig, args.preset or "paper", overrides + list(args.overrides), stage=STAGE)
    result = segment_train(cfg, resume=args.resume)
    print(result["report"])
    print(f"run: {result['run_dir']}")
    return 0


def _parse_areas(text: str) -> list[int]:
    try:
        areas = [int(a) for a in text.split(",") if a.strip()]
    except ValueError as err:
        raise ValueError(f"--areas must be comma-separated integers, e.g. 5 or 1,2; got {text!r}") from err
    if not areas:
        raise ValueError(f"--areas must name at least one area, got {text!r}")
    return areas


def _eval_cli(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    segmenter = load_segmenter(args.ckpt, device)
    data = segmenter.data
    if args.data is not None:
        data = dataclasses.replace(data, source=args.data)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    areas = _parse_areas(args.areas) if args.areas is not None else None
    if areas is not None and not data.source.lower().startswith("s3dis"):
        raise ValueError("--areas applies to s3dis sources only")
    stride = args.stride if args.stride is not None else data.eval_stride
    rooms = load_rooms(data, "test", areas)
    segmenter = dataclasses.replace(segmenter, data=data)
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    evals = _run_protocols(segmenter, rooms, protocols, stride=stride, batch_size=args.batch_size, device=device,
                           num_samples=args.samples)
    ckpt = Path(args.ckpt)
    base = ckpt if ckpt.is_dir() else ckpt.parent
    out_dir = Path(args.out) if args.out is not None else base / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    picture: Path | None = out_dir / "room.png"
    if args.picture is not None:
        picture = None if args.picture.lower() == "none" else Path(args.picture)
    extra = {
        "ckpt": str(args.ckpt),
        "init": segmenter.init,
        "source": data.source,
        "test_rooms": [r.name for r in rooms],
    }
    result = _write_outputs(out_dir, evals, segmenter, rooms, stride=stride, picture=picture,
                            title=f"Scene segmentation: {data.source} ({args.ckpt})", extra=extra)
    print(result["report"])
    print(f"results: {out_dir}")
    return 0
