"""Stage II of ACT: masked point modelling with a frozen Stage I teacher (ACT_SPEC §2).

One training step::

    points (B, N, 3)  normalised by the data set
      augment:  per-axis scale U(2/3, 3/2), shift U(-0.2, 0.2)          (on the device)
      group:    FPS + kNN -> patches (B, G, k, 3), centers (B, G, 3)      (once per batch)
      target:   frozen Stage I model on the *same* patches -> (B, G, C)   (no gradient)
      student:  MaskedPointModel(patches, centers, target) -> loss        (masked patches)

The student (:class:`~act3d.models.mpm.MaskedPointModel`) is the only model the engine
sees: it alone is optimised, checkpointed and resumed. The teacher is held by the
:class:`Stage2Task`, frozen (``requires_grad=False``, never in an optimiser, never in a
checkpoint) and moved to the batch's device on first use.

Targets (``Stage2Config.target``):

- ``"reference"`` — as the reference code: a *sampled* hard code (Gumbel, tau=1), the
  second DGCNN's output, the teacher left in train mode (prompt dropout on, batch-statistics
  BatchNorm in its patch embedding; a frozen pretrained backbone stays in eval mode, as
  :class:`~act3d.models.autoencoder.ACTAutoencoder` keeps it). Train mode would also update the BatchNorm running
  statistics; act3d runs those layers with ``track_running_stats`` switched off for the
  call, so they normalise with the batch's statistics but write nothing: the teacher's
  parameters *and* buffers stay bit-identical.
- ``"clean"`` — the argmax code and the teacher in eval mode (deterministic).
- ``"transformer"`` — like ``"clean"`` but the teacher's Transformer output (before the
  second DGCNN).
- ``"points"`` — no teacher: the Point-MAE baseline, CD-L2 on the masked patches' points.

The default is ``"clean"``, chosen by measurement (docs/results.md, "Stage II — target
variants"): with the ``tiny`` presets, one Stage I MiniLM teacher and the same 128 steps for
every target, a linear SVM on the frozen student features scored 69.3% (clean), 66.8%
(reference), 65.4% (points), 63.6% (transformer) and 61.8% (random-init student) on the
cluttered ``synthetic-scan`` shapes; on the clean ``synthetic`` shapes every student,
random init included, probed 95-97%. One seed and 280 test shapes: the gaps between targets
are about one standard error (2.8 points), so the ranking is weak evidence. ``clean`` also
has deterministic targets (no code sampling, no dropout), so they do not depend on the random
stream. ``"reference"`` stays available to match the paper's code.

Validation (``val/loss``) is the same loss on the held-out split, drawn from a fixed
random stream (the mask, the augmentation and, for ``"reference"``, the code sample), so
epochs are comparable and validating does not change the training stream.

At the end of a run the student backbone is written to ``<run dir>/student.safetensors``
(:func:`act3d.models.encoder_api.save_encoder`; the last epoch's weights) and, with
``run.plots``, a picture of the masking to ``<run dir>/plots/masking.png``.

CLI::

    act3d pretrain --teacher runs/pretrain-teacher-.../ --config tiny [--data SOURCE]
                   [--target reference|clean|transformer|points] [--set a.b=v ...]
                   [--out DIR] [--resume RUN_DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from act3d.config import OptimConfig, RunConfig, RuntimeConfig, add_config_arguments, config_from_args
from act3d.models.autoencoder import ACTAutoencoder
from act3d.models.encoder_api import save_encoder
from act3d.models.mpm import MaskedPointModel, MPMConfig
from act3d.models.student import ENCODER_PRESETS, EncoderConfig
from act3d.ops import group
from act3d.train.common import DataConfig, build_pretraining_split
from act3d.train.engine import FitResult, Task, fit, unwrap_model

__all__ = [
    "STAGE",
    "TARGETS",
    "AugmentConfig",
    "Stage2Config",
    "Stage2ModelConfig",
    "Stage2Task",
    "draw_masking",
    "pretrain",
    "register",
]

STAGE = "pretrain"
TARGETS = ("reference", "clean", "transformer", "points")
# target -> (code, output, teacher in train mode) for ACTAutoencoder.latent_features
_TEACHER_TARGETS: dict[str, tuple[str, str, bool]] = {
    "reference": ("sample", "dgcnn", True),
    "clean": ("argmax", "dgcnn", False),
    "transformer": ("argmax", "transformer", False),
}
_PICTURE_CLOUDS = 4


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid choices: {', '.join(TARGETS)}")


@dataclass
class Stage2ModelConfig:
    """The student: an encoder preset, the grouping and the MAE decoder.

    ``encoder`` names a size of :data:`act3d.models.student.ENCODER_PRESETS` (``paper``:
    384-d, 12 blocks; ``small``; ``tiny``). ``num_groups``/``group_size`` must equal the
    teacher's (the teacher sees the same patches). ``mask_ratio`` masks exactly
    ``int(mask_ratio * num_groups)`` patches per cloud.
    """

    encoder: Literal["paper", "small", "tiny"] = "paper"
    num_groups: int = 64
    group_size: int = 32
    drop_path: float = 0.1
    mask_ratio: float = 0.8
    decoder_depth: int = 2
    decoder_heads: int | None = None
    decoder_drop_path: float = 0.1

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_PRESETS:
            raise ValueError(
                f"unknown model.encoder {self.encoder!r}; valid choices: {', '.join(ENCODER_PRESETS)}"
            )
        self.mpm_config("points")

    def encoder_config(self) -> EncoderConfig:
        """The student backbone's :class:`EncoderConfig`."""
        return EncoderConfig.preset(
            self.encoder,
            num_groups=self.num_groups,
            group_size=self.group_size,
            drop_path=self.drop_path,
        )

    def mpm_config(self, target: str, target_dim: int = 384) -> MPMConfig:
        """The :class:`MPMConfig` for MPM target ``"latent"`` or ``"points"``."""
        return MPMConfig(
            encoder=self.encoder_config(),
            mask_ratio=self.mask_ratio,
            decoder_depth=self.decoder_depth,
            decoder_heads=self.decoder_heads,
            decoder_drop_path=self.decoder_drop_path,
            target=target,
            target_dim=target_dim,
        )


@dataclass
class AugmentConfig:
    """Per-cloud, per-axis scale ``U(scale_low, scale_high)`` then shift ``U(-translate,
    translate)``, applied to the normalised batch on the device (scale 1, 1 and translate 0
    turn it off)."""

    scale_low: float = 2.0 / 3.0
    scale_high: float = 1.5
    translate: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.scale_low <= self.scale_high:
            raise ValueError(
                f"need 0 < augment.scale_low <= augment.scale_high, got {self.scale_low}, {self.scale_high}"
            )
        if self.translate < 0:
            raise ValueError(f"augment.translate must be >= 0, got {self.translate}")


def _default_data() -> DataConfig:
    return DataConfig(source="synthetic", num_points=1024, train_split="pretrain", val_split="test")


def _default_optim() -> OptimConfig:
    return OptimConfig(lr=1e-3, weight_decay=0.05, epochs=300, warmup_epochs=10, batch_size=128)


@dataclass
class Stage2Config:
    """Everything ``act3d pretrain`` runs. Defaults: the paper's settings (ACT_SPEC §2).

    Attributes:
        data: point clouds (``data.num_points`` random points, normalised).
        model: the student and its grouping.
        augment: the scale/translate augmentation.
        teacher: a Stage I run folder or its ``teacher.safetensors`` (unused, may be null,
            for ``target="points"``).
        target: ``"reference"``, ``"clean"``, ``"transformer"`` or ``"points"`` (see the
            module docstring).
        optim, runtime, run: the engine's sections.
    """

    data: DataConfig = field(default_factory=_default_data)
    model: Stage2ModelConfig = field(default_factory=Stage2ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    teacher: str | None = None
    target: Literal["reference", "clean", "transformer", "points"] = "clean"
    optim: OptimConfig = field(default_factory=_default_optim)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="act"))

    def __post_init__(self) -> None:
        _check_target(self.target)


@contextlib.contextmanager
def _no_running_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` use batch statistics and write no buffer meanwhile."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in norms]
    try:
        for m in norms:
            m.track_running_stats = False
        yield
    finally:
        for m, flag in zip(norms, saved):
            m.track_running_stats = flag


def _load_teacher(path: str) -> ACTAutoencoder:
    from act3d.train.stage1 import load_autoencoder

    return load_autoencoder(path)


class Stage2Task(Task):
    """Stage II as an engine :class:`~act3d.train.engine.Task`.

    Args:
        cfg: the run's config.
        teacher: an already built Stage I model; ``None`` loads ``cfg.teacher`` (not needed
            for ``target="points"``, where any teacher is ignored). The model is frozen in
            place (``requires_grad_(False)``).

    Raises:
        ValueError: a teacher target without a teacher, or a grouping that differs from the
            teacher's.
    """

    def __init__(self, cfg: Stage2Config, teacher: ACTAutoencoder | None = None) -> None:
        _check_target(cfg.target)
        self.cfg = cfg
        self.teacher: ACTAutoencoder | None = None
        if cfg.target != "points":
            if teacher is None:
                if not cfg.teacher:
                    raise ValueError(
                        f"target {cfg.target!r} needs a Stage I teacher: pass --teacher "
                        "RUN_DIR|teacher.safetensors (or set teacher=...), or use target 'points'"
                    )
                teacher = _load_teacher(cfg.teacher)
            if not isinstance(teacher, ACTAutoencoder):
                raise ValueError(f"teacher must be an ACTAutoencoder, got {type(teacher).__name__}")
            tcfg, mcfg = teacher.config, cfg.model
            if (tcfg.num_groups, tcfg.group_size) != (mcfg.num_groups, mcfg.group_size):
                raise ValueError(
                    f"the teacher was trained on {tcfg.num_groups} patches of {tcfg.group_size} "
                    f"points but model.num_groups={mcfg.num_groups}, model.group_size="
                    f"{mcfg.group_size}; the student must see the teacher's grouping (set "
                    f"model.num_groups={tcfg.num_groups} model.group_size={tcfg.group_size})"
                )
            teacher.requires_grad_(False)
            self.teacher = teacher
        self._val_set: Dataset | None = None
        self._train_set: Dataset | None = None
        self._val_batches = 0

    # -- model and data -------------------------------------------------------

    @property
    def mpm_config(self) -> MPMConfig:
        """The student's config (MPM target and width follow the Stage II target)."""
        if self.teacher is None:
            return self.cfg.model.mpm_config("points")
        return self.cfg.model.mpm_config("latent", self.teacher.config.token_dim)

    def build_model(self) -> MaskedPointModel:
        return MaskedPointModel(self.mpm_config)

    def _dataset(self, split: str, train: bool) -> Dataset:
        d = self.cfg.data
        limit = d.num_samples if train else d.val_samples
        return build_pretraining_split(d, split, train, limit, self.cfg.runtime.seed)

    def train_dataset(self) -> Dataset:
        self._train_set = self._dataset(self.cfg.data.train_split, train=True)
        return self._train_set

    def val_dataset(self) -> Dataset | None:
        if self.cfg.data.val_split is None:
            return None
        self._val_set = self._dataset(self.cfg.data.val_split, train=False)
        return self._val_set

    # -- the step -------------------------------------------------------------

    def augment(self, points: Tensor) -> Tensor:
        """Per-cloud, per-axis scale and shift from torch's RNG. points: (B, N, 3) -> same."""
        a = self.cfg.augment
        batch = points.shape[0]
        scale = torch.rand(batch, 1, 3, device=points.device, dtype=points.dtype)
        shift = torch.rand(batch, 1, 3, device=points.device, dtype=points.dtype)
        scale = a.scale_low + (a.scale_high - a.scale_low) * scale
        return points * scale + a.translate * (2.0 * shift - 1.0)

    def group(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points (B, N, 3) -> patches (B, G, k, 3), centers (B, G, 3): FPS + kNN."""
        m = self.cfg.model
        return group(points, m.num_groups, m.group_size)

    def targets(self, patches: Tensor, centers: Tensor) -> Tensor | None:
        """The frozen teacher's per-patch targets on this grouping, or None for ``points``.

        Args:
            patches: (B, G, k, 3); centers: (B, G, 3).

        Returns:
            (B, G, C) features without gradient (C = the teacher's token width).
        """
        if self.teacher is None:
            return None
        code, output, train_mode = _TEACHER_TARGETS[self.cfg.target]
        teacher = self.teacher
        if next(teacher.parameters()).device != patches.device:
            teacher.to(patches.device)
        teacher.train(train_mode)
        with torch.no_grad(), _no_running_stats(teacher):
            return teacher.latent_features(patches, centers, code=code, output=output)

    def _loss(self, model: nn.Module, points: Tensor) -> Tensor:
        patches, centers = self.group(self.augment(points))
        target = self.targets(patches, centers)
        return model(patches, centers, target)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Any]]:
        return self._loss(model, batch["points"]), {}

    def validation_step(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        points = batch["points"]
        with _fixed_rng(points.device, self.cfg.runtime.seed, self._val_batches):
            loss = self._loss(model, points)
        self._val_batches += 1
        return {"count": points.shape[0], "loss": loss * points.shape[0]}

    def validation_metrics(self, sums: Mapping[str, Tensor]) -> dict[str, float]:
        self._val_batches = 0
        return super().validation_metrics(sums)

    # -- outputs --------------------------------------------------------------

    def on_fit_end(self, model: nn.Module, run_dir: Path) -> None:
        mpm = unwrap_model(model)
        save_encoder(mpm.student, run_dir / "student.safetensors")
        dataset = self._val_set if self._val_set is not None else self._train_set
        if self.cfg.run.plots and dataset is not None and len(dataset) > 0:
            count = min(_PICTURE_CLOUDS, len(dataset))
            points = torch.stack([dataset[i]["points"] for i in range(count)])
            patches, centers = self.group(points)
            generator = torch.Generator().manual_seed(self.cfg.runtime.seed)
            mask = mpm.random_mask(count, generator=generator, device=torch.device("cpu"))
            draw_masking(patches, centers, mask, run_dir / "plots" / "masking.png")


@contextlib.contextmanager
def _fixed_rng(device: torch.device, seed: int, index: int) -> Iterator[None]:
    """Run with torch's RNGs seeded from ``(seed, rank, index)``, restored afterwards."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    value = int(np.random.SeedSequence([int(seed), rank, int(index), 0x57A9E2]).generate_state(1)[0])
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(value)
        yield


def draw_masking(patches: Tensor, centers: Tensor, mask: Tensor, path: str | os.PathLike[str]) -> Path:
    """Picture of visible (coloured) and masked (grey) patches, one panel per cloud.

    Args:
        patches: (B, G, k, 3) patch-local points; centers: (B, G, 3); mask: (B, G) bool,
            True = masked.
        path: the PNG to write (its folder is created).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = (patches + centers.unsqueeze(2)).detach().cpu().numpy()  # (B, G, k, 3)
    mask_np = mask.detach().cpu().numpy()
    batch = points.shape[0]
    fig = Figure(figsize=(3.0 * batch, 3.3))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.84, wspace=0.0)
    fig.suptitle("coloured: visible patches (encoder input), grey: masked patches (predicted)", fontsize=10)
    for b in range(batch):
        ax = fig.add_subplot(1, batch, b + 1, projection="3d")
        hidden = points[b][mask_np[b]].reshape(-1, 3)  # (M*k, 3)
        shown = points[b][~mask_np[b]]  # (V, k, 3)
        colors = np.repeat(np.arange(shown.shape[0]), shown.shape[1])
        flat = shown.reshape(-1, 3)
        # y is up in the data; matplotlib's vertical axis is z
        ax.scatter(hidden[:, 0], hidden[:, 2], hidden[:, 1], s=2, c="0.7", alpha=0.6, depthshade=False)
        ax.scatter(flat[:, 0], flat[:, 2], flat[:, 1], s=6, c=colors, cmap="tab10", depthshade=False)
        lo, hi = points[b].reshape(-1, 3).min(axis=0), points[b].reshape(-1, 3).max(axis=0)
        mid, half = (lo + hi) / 2, float((hi - lo).max()) / 2
        ax.set_xlim(mid[0] - half, mid[0] + half)
        ax.set_ylim(mid[2] - half, mid[2] + half)
        ax.set_zlim(mid[1] - half, mid[1] + half)
        ax.view_init(elev=20, azim=-60)
        ax.set_title(f"visible {int((~mask_np[b]).sum())} / masked {int(mask_np[b].sum())}", fontsize=9)
        ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------- API / CLI


def pretrain(
    cfg: Stage2Config,
    teacher: ACTAutoencoder | None = None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> FitResult:
    """Run Stage II; the student backbone lands in ``<run dir>/student.safetensors``.

    Args:
        cfg: the config (``cfg.teacher`` is loaded unless ``teacher`` is given).
        teacher: an already built Stage I model (optional).
        run_dir: an explicit run folder; resume: a run folder to continue.

    Returns:
        The engine's :class:`FitResult`.
    """
    return fit(Stage2Task(cfg, teacher), cfg, stage=STAGE, run_dir=run_dir, resume=resume)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``act3d pretrain`` to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        "pretrain",
        help="Stage II: masked point modelling with a frozen Stage I teacher",
        description="Pre-train a student point encoder by predicting a frozen Stage I "
        "model's latent features of masked patches (ACT Stage II); writes the backbone to "
        "<run dir>/student.safetensors.",
    )
    parser.add_argument(
        "--teacher", metavar="CKPT", default=None,
        help="Stage I run folder or its teacher.safetensors (not needed for --target points)",
    )
    parser.add_argument(
        "--config", dest="preset", default=None, metavar="CONFIG",
        help="preset name (tiny, small, paper) or a YAML file (same as --preset)",
    )
    parser.add_argument("--data", metavar="SOURCE", default=None, help="data source, e.g. synthetic or shapenet:DIR")
    parser.add_argument("--target", metavar="|".join(TARGETS), default=None, help="Stage II target (default: the config's)")
    parser.add_argument("--out", metavar="DIR", default=None, help="parent folder of the run folder (run.out_dir)")
    add_config_arguments(parser, STAGE)
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    if args.target is not None:
        _check_target(args.target)
    cfg = config_from_args(Stage2Config, args, STAGE)
    changes: dict[str, Any] = {}
    if args.teacher is not None:
        changes["teacher"] = args.teacher
    if args.target is not None:
        changes["target"] = args.target
    if args.data is not None:
        changes["data"] = dataclasses.replace(cfg.data, source=args.data)
    if args.out is not None:
        changes["run"] = dataclasses.replace(cfg.run, out_dir=args.out)
    cfg = dataclasses.replace(cfg, **changes)
    result = pretrain(cfg, resume=args.resume)
    print(f"run: {result.run_dir}")
    print(f"student: {result.run_dir / 'student.safetensors'}")
    return 0
