"""Shape classification on the student backbone: fine-tuning and its honest report (ACT_SPEC §3).

One training step::

    points (B, N, 3)   from the data layer: train = random subset of an FPS pool,
                       test = FPS to N (``sampling="fps"``)
      augment:  rotation about the up (y) axis  (ScanObjectNN, synthetic-scan)
                or per-axis scale U(2/3, 3/2) + shift U(-0.2, 0.2) (ModelNet40, synthetic,
                few-shot); batched, on the device, from torch's RNG
      model:    PointClassifier(points) -> logits (B, C)
      loss:     cross-entropy (``label_smoothing``, default 0: the reference's
                ``nn.CrossEntropyLoss()``, its smoothing variant is commented out)

Modes (``model.mode``): ``full`` (everything trains, lr 5e-4), ``mlp3`` (the 3-layer head
only) and ``linear`` (one Linear), both with the backbone frozen (lr 1e-3). AdamW wd 0.05,
warm-up + cosine, batch 32, grad clip 10 (:func:`mode_lr` gives the paper's lr per mode).

Initialisation (``model.init``): ``"scratch"``, a student ``.safetensors``
(:func:`act3d.models.encoder_api.save_encoder`, e.g. Stage II's ``student.safetensors``), a
Stage II run folder holding one, or a ``classifier.safetensors`` (its backbone). Every
backbone tensor must match (a missing or extra key is an error); the checkpoint brings its
own encoder size, while the grouping (``model.num_groups``, ``model.group_size``: 64 for 1k
points, 128 for 2048, 512 for 8k) and ``model.drop_path`` come from this config.

Honest reporting. Every run records the **last-epoch** and the **best-epoch** scores. The
best epoch is chosen on the *selection* split and reported on the *report* split:

- selection: a stratified ``holdout_fraction`` of the (label-subset) training set when
  > 0, else ``data.val_split``;
- report: ``test_split`` when set, else ``data.val_split``.

When the two are the same split (ScanObjectNN and ModelNet40 only have a test split, and
the reference selects on it), the best-epoch number is optimistic and every record says so.
``data.label_fraction`` keeps a stratified, seeded share of the training labels (seeded by
``runtime.seed``, so different seeds also see different subsets; pretrained and scratch runs
with the same seed see the same one).

Files: each run is an engine run folder (see :mod:`act3d.train.engine`) plus
``classifier.safetensors`` (last epoch), ``classifier-best.safetensors`` (best epoch) and
``result.json``. :func:`finetune_seeds` runs several seeds in ``<group>/seed-<s>/`` and
writes ``<group>/summary.json`` and ``summary.md`` with mean ± sample std (ddof=1).

CLI::

    act3d finetune --data SOURCE --init CKPT|scratch --mode full|linear|mlp3
                   [--config CONFIG] [--labels 0.1] [--seeds 0,1,2] [--set a.b=v]
                   [--resume RUN_DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from act3d.checkpoint import atomic_path, load_weights, read_weights_metadata, save_weights
from act3d.config import (
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    add_config_arguments,
    config_from_args,
    load_config,
)
from act3d.data.transforms import RotateUp, ScaleTranslate, Transform
from act3d.eval.classify import evaluate_classifier, metrics_from_sums
from act3d.models.classifier import CLASSIFIER_MODES, PointClassifier
from act3d.models.student import ENCODER_PRESETS, EncoderConfig
from act3d.train.common import (
    DataConfig,
    init_backbone,
    parse_seeds,
    resumed_seeds,
    run_seed_group,
    write_group_summary,
)
from act3d.train.engine import FitResult, Task, fit, resolve_device

__all__ = [
    "AUGMENTATIONS",
    "CLASSIFIER_FORMAT",
    "STAGE",
    "ClassifierConfig",
    "FinetuneConfig",
    "FinetuneTask",
    "LabelledSubset",
    "RunRecord",
    "SeedSummary",
    "build_split",
    "default_preset",
    "finetune",
    "finetune_seeds",
    "format_summary",
    "load_classifier",
    "load_init_backbone",
    "mean_std",
    "mode_lr",
    "register",
    "resolve_augment",
    "save_classifier",
    "stratified_subset",
]

STAGE = "finetune"
CLASSIFIER_FORMAT = "act3d.classifier"
AUGMENTATIONS = ("auto", "scale_translate", "rotate", "none")
_MODE_LR = {"full": 5e-4, "mlp3": 1e-3, "linear": 1e-3}
_ROTATE_SOURCES = ("scanobjectnn", "synthetic-scan")


def mode_lr(mode: str) -> float:
    """The paper's learning rate of a mode: 5e-4 (full), 1e-3 (linear, mlp3)."""
    if mode not in _MODE_LR:
        raise ValueError(f"unknown mode {mode!r}; valid choices: {list(CLASSIFIER_MODES)}")
    return _MODE_LR[mode]


# ----------------------------------------------------------------------------- config


@dataclass
class ClassifierConfig:
    """The classifier: where its backbone starts, its size (from scratch), grouping and head.

    Attributes:
        init: ``"scratch"``, a student/classifier ``.safetensors`` or a Stage II run folder.
        encoder: size preset used from scratch (a checkpoint brings its own size).
        num_groups: patches per cloud (64 for 1k points, 128 for 2048, 512 for 8k).
        group_size: points per patch.
        drop_path: largest stochastic-depth rate of the backbone.
        mode: ``"full"``, ``"mlp3"`` or ``"linear"``.
        head_hidden: hidden width of the MLP head.
        head_dropout: dropout of the MLP head.
    """

    init: str = "scratch"
    encoder: Literal["paper", "small", "tiny"] = "paper"
    num_groups: int = 64
    group_size: int = 32
    drop_path: float = 0.1
    mode: Literal["full", "mlp3", "linear"] = "full"
    head_hidden: int = 256
    head_dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_PRESETS:
            raise ValueError(f"unknown model.encoder {self.encoder!r}; valid choices: {list(ENCODER_PRESETS)}")
        if self.mode not in CLASSIFIER_MODES:
            raise ValueError(f"unknown model.mode {self.mode!r}; valid choices: {list(CLASSIFIER_MODES)}")
        if not self.init:
            raise ValueError("model.init must be 'scratch' or a checkpoint path")


def _default_optim() -> OptimConfig:
    return OptimConfig(lr=5e-4, weight_decay=0.05, epochs=300, warmup_epochs=10, batch_size=32, grad_clip=10.0)


def _default_run() -> RunConfig:
    return RunConfig(name="cls", best_metric="val/acc", best_mode="max")


@dataclass
class FinetuneConfig:
    """Everything ``act3d finetune`` runs. Defaults: the paper's settings (ACT_SPEC §3).

    Attributes:
        data: the labelled data (``label_fraction`` for low-label runs).
        model: see :class:`ClassifierConfig`.
        augment: ``"auto"`` (rotation about y for ScanObjectNN and synthetic-scan, scale &
            translate otherwise), ``"scale_translate"``, ``"rotate"`` or ``"none"``.
        label_smoothing: cross-entropy label smoothing (0: plain CE, as the reference).
        holdout_fraction: share of the training set held out (stratified) to select the
            best epoch; 0 selects on ``data.val_split``.
        test_split: the split reported at the end with the last- and best-epoch weights;
            ``None`` reports ``data.val_split``.
        optim, runtime, run: the engine's sections.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    augment: Literal["auto", "scale_translate", "rotate", "none"] = "auto"
    label_smoothing: float = 0.0
    holdout_fraction: float = 0.0
    test_split: str | None = None
    optim: OptimConfig = field(default_factory=_default_optim)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=_default_run)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augment {self.augment!r}; valid choices: {list(AUGMENTATIONS)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.holdout_fraction == 0.0 and self.data.val_split is None:
            raise ValueError("fine-tuning needs data.val_split (or holdout_fraction > 0) to score epochs")


def resolve_augment(augment: str, source: str) -> str:
    """``"auto"`` -> ``"rotate"`` for ScanObjectNN / synthetic-scan, else ``"scale_translate"``."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; valid choices: {list(AUGMENTATIONS)}")
    if augment != "auto":
        return augment
    kind = source.split(":", 1)[0].lower()
    return "rotate" if kind in _ROTATE_SOURCES else "scale_translate"


def _augmenter(name: str) -> Transform | None:
    if name == "rotate":
        return RotateUp(axis="y")
    if name == "scale_translate":
        return ScaleTranslate()
    return None


# ----------------------------------------------------------------------------- data


def stratified_subset(labels: np.ndarray | Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded, class-stratified share of a labelled set, sorted.

    Each class keeps ``max(1, round(fraction * n_c))`` of its ``n_c`` samples.

    Args:
        labels: (M,) integer labels.
        fraction: share in (0, 1].
        seed: the subset is a function of ``(labels, fraction, seed)`` only.

    Returns:
        (K,) int64 sorted indices.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if labels.size and labels.min() < 0:
        raise ValueError("stratified_subset needs labelled samples (label >= 0)")
    if fraction == 1.0:
        return np.arange(labels.size, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x1ABE1])
    keep: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, int(round(fraction * members.size)))
        keep.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)


def _dataset_labels(dataset: Dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.array([int(dataset[i]["label"]) for i in range(len(dataset))], dtype=np.int64)


class LabelledSubset(Dataset):
    """Samples ``indices`` of ``base`` (optionally relabelled), keeping class metadata.

    Args:
        base: a labelled dataset of ``{"points", "label"}`` dicts.
        indices: (K,) indices into ``base``.
        label_map: old label -> new label (few-shot episodes); ``None`` keeps labels.
        class_names: names of the (new) classes; default ``base.class_names``.
    """

    def __init__(
        self,
        base: Dataset,
        indices: Sequence[int] | np.ndarray,
        label_map: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise ValueError(f"indices must be in [0, {len(base)})")
        self.label_map = dict(label_map) if label_map is not None else None
        base_labels = _dataset_labels(base)[self.indices]
        if self.label_map is not None:
            missing = sorted({int(v) for v in base_labels} - set(self.label_map))
            if missing:
                raise ValueError(f"label_map has no entry for labels {missing}")
            base_labels = np.array([self.label_map[int(v)] for v in base_labels], dtype=np.int64)
        self._labels = base_labels
        if class_names is not None:
            self.class_names = list(class_names)
        else:
            self.class_names = list(getattr(base, "class_names", []))
        self.num_classes = len(self.class_names) if self.class_names else int(getattr(base, "num_classes", 0))

    @property
    def labels(self) -> np.ndarray:
        """(K,) labels of the subset (after relabelling)."""
        return self._labels.copy()

    def set_epoch(self, epoch: int) -> None:
        """Forward to the base dataset (training randomness per epoch)."""
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = dict(self.base[int(self.indices[index])])
        sample["label"] = torch.tensor(int(self._labels[index]), dtype=torch.int64)
        return sample


def build_split(cfg: FinetuneConfig, split: str, train: bool) -> Dataset:
    """One labelled split with the §3 sampling (``"fps"``: train = random subset of the FPS
    pool, test = FPS to N). The data seed is fixed (0): every run sees the same shapes (the
    synthetic world is generated from it); the training draws come from the engine's RNG,
    seeded by ``runtime.seed``. ``data.num_samples``/``val_samples`` cap the split (synthetic:
    shapes generated; others: a fixed random subset)."""
    from act3d.data import build_dataset, is_synthetic

    d = cfg.data
    synthetic = is_synthetic(d.source)
    cap = d.num_samples if train else d.val_samples
    dataset = build_dataset(
        d.source,
        split,
        d.num_points,
        root=d.root,
        train=train,
        sampling="fps",
        seed=0,
        num_samples=cap if synthetic else None,
    )
    if cap is not None and not synthetic and cap < len(dataset):
        rng = np.random.default_rng([0, 0xCA9])
        dataset = LabelledSubset(dataset, np.sort(rng.choice(len(dataset), cap, replace=False)))
    if not getattr(dataset, "num_classes", 0):
        raise ValueError(f"data source {d.source!r} split {split!r} is unlabeled; fine-tuning needs labels")
    return dataset


# ----------------------------------------------------------------------------- checkpoints


def _resolve_init_path(init: str) -> Path:
    path = Path(init)
    if path.is_dir():
        for name in ("student.safetensors", "encoder.safetensors", "classifier.safetensors"):
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.glob("*.safetensors"))
        raise FileNotFoundError(
            f"{path}: no student.safetensors, encoder.safetensors or classifier.safetensors in this "
            f"folder (found: {found or 'no .safetensors files'}); pass the file itself"
        )
    if not path.is_file():
        raise FileNotFoundError(f"model.init: no checkpoint file or run folder at {path}")
    return path


def load_init_backbone(init: str) -> tuple[EncoderConfig, dict[str, Tensor], Path]:
    """Read a backbone to initialise from.

    Args:
        init: a student ``.safetensors`` (format ``act3d.encoder``), a
            ``classifier.safetensors`` (format ``act3d.classifier``: its backbone) or a run
            folder holding one of them.

    Returns:
        ``(encoder config, backbone state dict keyed like PointEncoder, file)``.

    Raises:
        FileNotFoundError: nothing to load at ``init``.
        ValueError: a file of another format, naming the format found.
    """
    from act3d.models.encoder_api import ENCODER_FORMAT, load_encoder

    path = _resolve_init_path(init)
    meta = read_weights_metadata(path)
    fmt = meta.get("format")
    if fmt == ENCODER_FORMAT:
        encoder = load_encoder(path)
        return encoder.config, {k: v.detach().clone() for k, v in encoder.state_dict().items()}, path
    if fmt == CLASSIFIER_FORMAT:
        config = EncoderConfig.from_dict(json.loads(meta["encoder_config"]))
        state = load_weights(path)
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        return config, backbone, path
    raise ValueError(
        f"{path}: metadata format {fmt!r} is not a backbone to fine-tune; expected "
        f"{ENCODER_FORMAT!r} (a student, e.g. Stage II's student.safetensors) or {CLASSIFIER_FORMAT!r}"
    )


def save_classifier(
    model: PointClassifier,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    source: str,
    num_points: int,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write a classifier's weights and everything :func:`load_classifier` needs.

    Metadata: ``format``, ``encoder_config`` (JSON), ``num_classes``, ``class_names``
    (JSON), ``mode``, ``head_hidden``, ``head_dropout``, ``data_source``, ``num_points``,
    plus ``extra``.
    """
    if not isinstance(model, PointClassifier):
        raise ValueError(f"model must be a PointClassifier, got {type(model).__name__}")
    head = model.cls_head_finetune
    hidden = head[0].out_features if model.mode != "linear" else 0
    dropout = head[3].p if model.mode != "linear" else 0.0
    meta = {
        "format": CLASSIFIER_FORMAT,
        "format_version": "1",
        "encoder_config": json.dumps(model.backbone.config.to_dict(), sort_keys=True),
        "num_classes": str(model.num_classes),
        "class_names": json.dumps(list(class_names)),
        "mode": model.mode,
        "head_hidden": str(hidden),
        "head_dropout": repr(float(dropout)),
        "data_source": source,
        "num_points": str(int(num_points)),
        **dict(extra or {}),
    }
    return save_weights(model.state_dict(), path, meta)


def _classifier_from_state(state: Mapping[str, Tensor], meta: Mapping[str, str], path: Path) -> PointClassifier:
    try:
        config = EncoderConfig.from_dict(json.loads(meta["encoder_config"]))
        mode = meta["mode"]
        num_classes = int(meta["num_classes"])
        hidden = int(meta.get("head_hidden", "256")) or 256
        dropout = float(meta.get("head_dropout", "0.5"))
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: bad classifier metadata ({err})") from err
    model = PointClassifier(config, num_classes, mode=mode, head_hidden=hidden, head_dropout=dropout)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: classifier keys do not match; missing: {missing}; unexpected: {unexpected}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{path}: shape mismatch for {key!r}: file {tuple(value.shape)}, model {tuple(own[key].shape)}"
            )
    model.load_state_dict(dict(state))
    return model


def load_classifier(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> PointClassifier:
    """Load a classifier written by :func:`save_classifier` (or a fine-tune run folder).

    Args:
        path: ``classifier.safetensors``, or a run folder holding one.
        device: where to put the weights.

    Returns:
        A :class:`PointClassifier` in eval mode, with ``class_names``, ``data_source`` and
        ``num_points`` attributes from the metadata.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "classifier.safetensors"
        if not candidate.is_file():
            seeds = sorted(p.name for p in path.glob("seed-*"))
            hint = f"; this is a multi-seed folder, pick one of {seeds}" if seeds else ""
            raise FileNotFoundError(f"{path}: no classifier.safetensors{hint}")
        path = candidate
    meta = read_weights_metadata(path)
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected {CLASSIFIER_FORMAT!r}")
    model = _classifier_from_state(load_weights(path), meta, path)
    model.class_names = json.loads(meta.get("class_names", "[]"))
    model.data_source = meta.get("data_source", "")
    model.num_points = int(meta.get("num_points", "1024"))
    return model.to(device).eval()


# ----------------------------------------------------------------------------- the task


class FinetuneTask(Task):
    """Classification fine-tuning as an engine :class:`~act3d.train.engine.Task`.

    Args:
        cfg: the run's config.
        train_set: use this training set instead of building ``data.train_split``
            (few-shot episodes); must expose ``num_classes``.
        val_set: use this validation set instead of ``data.val_split``.
    """

    def __init__(self, cfg: FinetuneConfig, train_set: Dataset | None = None, val_set: Dataset | None = None) -> None:
        self.cfg = cfg
        self._given_train = train_set
        self._given_val = val_set
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._holdout: Dataset | None = None
        self.augment_name = resolve_augment(cfg.augment, cfg.data.source)
        self._augment = _augmenter(self.augment_name)
        self.load_report: dict[str, Any] = {}

    # -- data -----------------------------------------------------------------

    def _prepare(self) -> None:
        if self._train is not None:
            return
        cfg = self.cfg
        base = self._given_train if self._given_train is not None else build_split(cfg, cfg.data.train_split, True)
        labels = _dataset_labels(base)
        keep = stratified_subset(labels, cfg.data.label_fraction, cfg.runtime.seed)
        if cfg.holdout_fraction > 0:
            held = stratified_subset(labels[keep], cfg.holdout_fraction, cfg.runtime.seed + 7919)
            rest = np.setdiff1d(np.arange(keep.size), held)
            # validation draws the held-out shapes with test-mode sampling (FPS to N)
            plain = base if self._given_train is not None else build_split(cfg, cfg.data.train_split, False)
            self._holdout = LabelledSubset(plain, keep[held])
            keep = keep[rest]
        self._train = base if keep.size == len(base) else LabelledSubset(base, keep)

    @property
    def num_classes(self) -> int:
        """Classes of the training set."""
        self._prepare()
        return int(getattr(self._train, "num_classes", 0))

    @property
    def class_names(self) -> list[str]:
        """Class names of the training set (``class_<i>`` when it has none)."""
        self._prepare()
        names = list(getattr(self._train, "class_names", []))
        return names or [f"class_{i}" for i in range(self.num_classes)]

    def train_dataset(self) -> Dataset:
        self._prepare()
        assert self._train is not None
        return self._train

    def val_dataset(self) -> Dataset:
        if self._val is None:
            self._prepare()
            if self._holdout is not None:
                self._val = self._holdout
            elif self._given_val is not None:
                self._val = self._given_val
            else:
                assert self.cfg.data.val_split is not None
                self._val = build_split(self.cfg, self.cfg.data.val_split, False)
        return self._val

    def report_dataset(self) -> Dataset:
        """The split the final numbers are reported on (see the module docstring)."""
        cfg = self.cfg
        if cfg.test_split is not None:
            return build_split(cfg, cfg.test_split, False)
        if self._holdout is not None:
            if self._given_val is not None:
                return self._given_val
            assert cfg.data.val_split is not None
            return build_split(cfg, cfg.data.val_split, False)
        return self.val_dataset()

    @property
    def selection(self) -> str:
        """Where the best epoch is chosen, in words."""
        cfg = self.cfg
        if cfg.holdout_fraction > 0:
            return f"holdout ({cfg.holdout_fraction:g} of the training labels)"
        split = "given validation set" if self._given_val is not None else f"split {cfg.data.val_split!r}"
        if cfg.test_split is None or cfg.test_split == cfg.data.val_split:
            return f"{split}, the same split as reported (as the reference does; optimistic)"
        return split

    @property
    def selected_on_report_split(self) -> bool:
        """True when the best epoch is chosen on the split it is reported on."""
        cfg = self.cfg
        return cfg.holdout_fraction == 0 and (cfg.test_split is None or cfg.test_split == cfg.data.val_split)

    # -- model ----------------------------------------------------------------

    def encoder_config(self) -> tuple[EncoderConfig, dict[str, Tensor] | None, str]:
        """``(encoder config, initial backbone state or None, where it came from)``."""
        m = self.cfg.model
        return init_backbone(
            m.init, m.encoder, num_groups=m.num_groups, group_size=m.group_size, drop_path=m.drop_path
        )

    def build_model(self) -> PointClassifier:
        m = self.cfg.model
        config, state, origin = self.encoder_config()
        model = PointClassifier(
            config, self.num_classes, mode=m.mode, head_hidden=m.head_hidden, head_dropout=m.head_dropout
        )
        if state is not None:
            report = model.load_backbone(state, strict=True)
            self.load_report = {"init": origin, "loaded": len(report.loaded), "backbone_keys": len(model.backbone.state_dict())}
        else:
            self.load_report = {"init": "scratch", "loaded": 0, "backbone_keys": len(model.backbone.state_dict())}
        return model

    # -- steps ----------------------------------------------------------------

    def augment(self, points: Tensor) -> Tensor:
        """Training augmentation of a batch on its device. points: (B, N, 3) -> same."""
        return points if self._augment is None else self._augment(points)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        points = self.augment(batch["points"])
        labels = batch["label"]
        logits = model(points)  # (B, C)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        acc = (logits.argmax(dim=-1) == labels).float().mean()
        return loss, {"acc": acc.detach()}

    def validation_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        labels = batch["label"]
        logits = model(batch["points"]).float()
        classes = logits.shape[1]
        pred = logits.argmax(dim=-1)
        confusion = torch.bincount(labels * classes + pred, minlength=classes * classes).reshape(classes, classes)
        return {
            "count": torch.tensor(len(labels), device=labels.device),
            "loss": F.cross_entropy(logits, labels, reduction="sum"),
            "confusion": confusion,
        }

    def validation_metrics(self, sums: Mapping[str, Tensor]) -> dict[str, float]:
        return metrics_from_sums(sums)

    def on_fit_end(self, model: nn.Module, run_dir: Path) -> None:
        assert isinstance(model, PointClassifier)
        extra = {"init": str(self.load_report.get("init", self.cfg.model.init))}
        common = dict(class_names=self.class_names, source=self.cfg.data.source, num_points=self.cfg.data.num_points)
        save_classifier(model, run_dir / "classifier.safetensors", extra={**extra, "weights": "last"}, **common)
        best = run_dir / "checkpoints" / "best.safetensors"
        if best.is_file():
            copy = PointClassifier(
                model.backbone.config,
                model.num_classes,
                mode=model.mode,
                head_hidden=self.cfg.model.head_hidden,
                head_dropout=self.cfg.model.head_dropout,
            )
            copy.load_state_dict(load_weights(best))
            save_classifier(copy, run_dir / "classifier-best.safetensors", extra={**extra, "weights": "best"}, **common)


# ----------------------------------------------------------------------------- running


@dataclass
class RunRecord:
    """What one fine-tuning run reports (fractions in [0, 1]).

    Attributes:
        run_dir: the engine run folder.
        seed: ``runtime.seed``.
        last_acc, last_mean_class_acc: report split, last-epoch weights.
        best_acc, best_mean_class_acc: report split, weights of the best epoch.
        best_epoch: the epoch chosen on the selection split.
        epochs: epochs trained.
        selection: where the best epoch was chosen, in words.
        selected_on_report_split: the best epoch was chosen on the reported split.
        train_size: training samples used (after the label subset / holdout).
        init: ``"scratch"`` or the checkpoint the backbone came from.
        backbone_keys_loaded: backbone tensors loaded from ``init``.
        seconds: wall time of the run.
    """

    run_dir: str
    seed: int
    last_acc: float
    last_mean_class_acc: float
    best_acc: float
    best_mean_class_acc: float
    best_epoch: int | None
    epochs: int
    selection: str
    selected_on_report_split: bool
    train_size: int
    init: str
    backbone_keys_loaded: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def _report_scores(task: FinetuneTask, result: FitResult) -> dict[str, float]:
    if task.selected_on_report_split:
        return {
            "last_acc": result.last["val/acc"],
            "last_mean_class_acc": result.last["val/mean_class_acc"],
            "best_acc": result.best.get("val/acc", result.last["val/acc"]),
            "best_mean_class_acc": result.best.get("val/mean_class_acc", result.last["val/mean_class_acc"]),
        }
    report = task.report_dataset()
    device = resolve_device(task.cfg.runtime.device)
    out: dict[str, float] = {}
    for tag, file in (("last", "classifier.safetensors"), ("best", "classifier-best.safetensors")):
        path = result.run_dir / file
        if not path.is_file():
            path = result.run_dir / "classifier.safetensors"
        model = load_classifier(path, device=device)
        scores = evaluate_classifier(model, report, num_classes=model.num_classes, batch_size=task.cfg.optim.batch_size)
        out[f"{tag}_acc"] = scores.accuracy
        out[f"{tag}_mean_class_acc"] = scores.mean_class_accuracy
    return out


def finetune(
    cfg: FinetuneConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
) -> RunRecord:
    """Fine-tune one classifier and write ``result.json`` into its run folder.

    Args:
        cfg: the config (one seed: ``cfg.runtime.seed``).
        run_dir: the run folder (default ``<run.out_dir>/finetune-<run.name>-<time>``).
        resume: continue the run in this folder.
        train_set, val_set: datasets to use instead of the configured splits.

    Returns:
        A :class:`RunRecord` (last- and best-epoch scores on the report split).
    """
    task = FinetuneTask(cfg, train_set=train_set, val_set=val_set)
    tic = time.perf_counter()
    result = fit(task, cfg, stage=STAGE, run_dir=run_dir, resume=resume)
    scores = _report_scores(task, result)
    record = RunRecord(
        run_dir=str(result.run_dir),
        seed=cfg.runtime.seed,
        best_epoch=result.best_epoch,
        epochs=result.epochs,
        selection=task.selection,
        selected_on_report_split=task.selected_on_report_split,
        train_size=len(task.train_dataset()),
        init=str(task.load_report.get("init")),
        backbone_keys_loaded=int(task.load_report.get("loaded", 0)),
        seconds=time.perf_counter() - tic,
        **scores,
    )
    with atomic_path(result.run_dir / "result.json") as tmp:
        tmp.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")
    return record


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; ``None`` for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


_SUMMARY_METRICS = ("last_acc", "best_acc", "last_mean_class_acc", "best_mean_class_acc")


@dataclass
class SeedSummary:
    """Runs over several seeds and their mean ± sample std.

    Attributes:
        group_dir: the folder holding ``seed-<s>/`` runs and the summary files.
        records: one :class:`RunRecord` per seed, in seed order.
        stats: ``{metric: {"mean", "std", "values"}}`` for last/best (mean class) accuracy.
    """

    group_dir: Path
    records: list[RunRecord]
    stats: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "group_dir": str(self.group_dir),
            "seeds": [r.seed for r in self.records],
            "stats": self.stats,
            "selection": self.records[0].selection if self.records else "",
            "selected_on_report_split": bool(self.records and self.records[0].selected_on_report_split),
            "runs": [r.to_dict() for r in self.records],
        }


def _summarise(group_dir: Path, records: list[RunRecord]) -> SeedSummary:
    stats: dict[str, dict[str, Any]] = {}
    for name in _SUMMARY_METRICS:
        values = [getattr(r, name) for r in records]
        mean, std = mean_std(values)
        stats[name] = {"mean": mean, "std": std, "values": values}
    return SeedSummary(group_dir=group_dir, records=records, stats=stats)


def _pct(mean: float, std: float | None) -> str:
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def format_summary(summary: SeedSummary, title: str = "Fine-tuning") -> str:
    """A Markdown report of a :class:`SeedSummary` (accuracies in %)."""
    s, recs = summary.stats, summary.records
    lines = [
        f"# {title}",
        "",
        f"{len(recs)} seed(s): {', '.join(str(r.seed) for r in recs)}; mean ± sample std (ddof=1), in %.",
        "",
        "| | last epoch | best epoch |",
        "|---|---|---|",
        f"| overall accuracy | {_pct(s['last_acc']['mean'], s['last_acc']['std'])} | "
        f"{_pct(s['best_acc']['mean'], s['best_acc']['std'])} |",
        f"| mean class accuracy | {_pct(s['last_mean_class_acc']['mean'], s['last_mean_class_acc']['std'])} | "
        f"{_pct(s['best_mean_class_acc']['mean'], s['best_mean_class_acc']['std'])} |",
        "",
        "| seed | last acc | best acc | best epoch | epochs | train size | time (s) | run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        lines.append(
            f"| {r.seed} | {100 * r.last_acc:.2f} | {100 * r.best_acc:.2f} | {r.best_epoch} | {r.epochs} | "
            f"{r.train_size} | {r.seconds:.0f} | `{Path(r.run_dir).name}` |"
        )
    if recs:
        if recs[0].selected_on_report_split:
            lines += [
                "",
                "Best epoch selected on the test split, as the reference does — optimistic; the "
                "last-epoch number is the one to trust.",
            ]
        else:
            lines += ["", f"Best epoch selected on: {recs[0].selection}; both columns are scored on the test split."]
        lines.append(f"Backbone init: {recs[0].init} ({recs[0].backbone_keys_loaded} tensors loaded).")
    return "\n".join(lines) + "\n"


def _write_summary(summary: SeedSummary, title: str) -> None:
    write_group_summary(summary.group_dir, summary.to_dict(), format_summary(summary, title))


def finetune_seeds(
    cfg: FinetuneConfig,
    seeds: Sequence[int],
    *,
    group_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    title: str = "Fine-tuning",
) -> SeedSummary:
    """Fine-tune once per seed and summarise (mean ± sample std of last/best accuracy).

    Args:
        cfg: the base config; each run uses it with ``runtime.seed`` set to the seed.
        seeds: the seeds, e.g. ``[0, 1, 2]`` (distinct).
        group_dir: folder for ``seed-<s>/`` runs and ``summary.{json,md}`` (default
            ``<run.out_dir>/finetune-<run.name>-<time>``).
        resume: a group folder to continue: finished seeds (with ``result.json``) are kept,
            interrupted ones resume from their last checkpoint, missing ones start.
        title: the heading of ``summary.md``.

    Returns:
        A :class:`SeedSummary`.
    """
    from act3d.data import parse_source

    parse_source(cfg.data.source)  # fail on a bad source or init before making folders
    if cfg.model.init != "scratch":
        _resolve_init_path(cfg.model.init)
    group, records = run_seed_group(
        cfg, seeds, stage=STAGE, train=finetune, load_record=lambda saved: RunRecord(**saved),
        on_record=lambda g, recs: _write_summary(_summarise(g, recs), title),
        group_dir=group_dir, resume=resume,
    )  # fmt: skip
    summary = _summarise(group, records)
    _write_summary(summary, title)
    return summary


# ----------------------------------------------------------------------------- CLI

_PRESET_BY_KIND = {
    "scanobjectnn": "scanobjectnn",
    "modelnet40": "modelnet40",
    "synthetic": "synthetic",
    "synthetic-scan": "synthetic_scan",
}


def default_preset(source: str) -> str:
    """The packaged preset for a data source when ``--config`` is not given."""
    return _PRESET_BY_KIND.get(source.split(":", 1)[0].lower(), "paper")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``act3d finetune`` to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a shape classifier (full, mlp3 or linear) from a student or scratch",
        description="Fine-tune a classifier on the student backbone (ACT_SPEC §3). Each seed is "
        "a run folder with classifier.safetensors (last epoch), classifier-best.safetensors and "
        "result.json; the group folder gets summary.json/summary.md with mean ± std over seeds "
        "of the last- and best-epoch accuracy.",
    )
    parser.add_argument("--data", metavar="SOURCE", default=None,
                        help="scanobjectnn:OBJ_BG|OBJ_ONLY|PB_T50_RS[:DIR], modelnet40[:DIR], h5:PATH, "
                        "synthetic, synthetic-scan, folder:DIR (default: the config's)")
    parser.add_argument("--init", metavar="CKPT|scratch", default=None,
                        help="student .safetensors, Stage II run folder, classifier.safetensors or 'scratch'")
    parser.add_argument("--mode", choices=CLASSIFIER_MODES, default=None,
                        help="full fine-tuning, or a frozen backbone with an mlp3/linear head; linear and "
                        "mlp3 also set optim.lr=1e-3 (the paper's) unless --set optim.lr is given")
    parser.add_argument("--config", dest="preset", default=None, metavar="CONFIG",
                        help="preset (paper, scanobjectnn, modelnet40, modelnet40_8k, synthetic, "
                        "synthetic_scan, tiny) or a YAML file; default chosen from --data")
    parser.add_argument("--labels", type=float, default=None, metavar="FRACTION",
                        help="keep a stratified, seeded share of the training labels, e.g. 0.1")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="run these seeds (default: runtime.seed) and report mean ± std")
    add_config_arguments(parser, STAGE)
    parser.set_defaults(func=_run_cli)


def _cli_config(args: argparse.Namespace) -> FinetuneConfig:
    overrides: list[str] = []
    if args.data is not None:
        overrides.append(f"data.source={args.data}")
    if args.init is not None:
        overrides.append(f"model.init={args.init}")
    if args.mode is not None:
        overrides.append(f"model.mode={args.mode}")
        if args.mode != "full" and not any(o.split("=", 1)[0].strip() == "optim.lr" for o in args.overrides):
            overrides.append(f"optim.lr={mode_lr(args.mode)}")
    if args.labels is not None:
        overrides.append(f"data.label_fraction={args.labels}")
    if args.resume is not None:
        if args.preset is not None:
            raise ValueError("--resume uses the run's saved config.yaml; drop --config")
        if overrides:
            raise ValueError("--resume continues the saved run; drop --data/--init/--mode/--labels")
        return config_from_args(FinetuneConfig, args, STAGE)
    preset = args.preset
    if preset is None:
        source = args.data
        if source is None:
            source = FinetuneConfig().data.source
        preset = default_preset(source)
    return load_config(FinetuneConfig, preset, overrides + list(args.overrides), stage=STAGE)


def _run_cli(args: argparse.Namespace) -> int:
    cfg = _cli_config(args)
    resume = None
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if args.resume is not None:
        resume = Path(args.resume)
        saved = resumed_seeds(resume, "fine-tune")
        if saved is None:
            record = finetune(cfg, resume=resume)
            print(json.dumps(record.to_dict(), indent=2))
            return 0
        seeds = seeds or saved
    seeds = seeds or [cfg.runtime.seed]
    title = f"Fine-tuning {cfg.data.source} ({cfg.model.mode}, init {cfg.model.init}, labels {cfg.data.label_fraction:g})"
    summary = finetune_seeds(cfg, seeds, resume=resume, title=title)
    print(format_summary(summary, title))
    print(f"group: {summary.group_dir}")
    return 0

