"""Stage I of ACT: train the cross-modal autoencoder that becomes the teacher (ACT_SPEC §1).

A pretrained Transformer (``teacher``: MiniLM by default on CPU, ViT-B/16 in the paper) is
frozen inside :class:`~act3d.models.autoencoder.ACTAutoencoder`; the point tokenizer,
codebook, projections, prompts, second DGCNN and decoder learn to reconstruct patches::

    points (B,N,3) -> group (FPS + kNN) -> patches (B,G,k,3), centers (B,G,3)
      -> autoencoder(tau)  -> coarse (B,G,k/4,3), fine (B,G,k,3)
      -> loss = CD-L1(coarse) + CD-L1(fine) + beta * KL(uniform || mean code usage)

The Gumbel temperature ``tau`` and the KL weight ``beta`` follow the global optimiser
iteration (:class:`Stage1Schedule`; cosine ``tau`` 1 -> 0.0625 over 100k iterations, ``beta``
0 for 10k iterations then cosine to 0.1 over 100k in the paper).

Data (§1): a random subset of ``data.num_points`` points per shape (not FPS), normalised to
the unit sphere, no augmentation.

Validation (``val/cd_l1``, the model-selection metric): each held-out cloud is encoded with
its most likely code per patch (argmax, deterministic), decoded, and the fine patches are
put back at their centers; ``cd_l1`` is the CD-L1 between that whole reconstruction
(G*k points) and the input cloud, averaged over clouds. Also logged: ``cd_l1_coarse`` (the
same with the coarse points) and ``cd_l1_patch`` (CD-L1 per patch in patch coordinates,
the quantity the training loss uses).

At the end of a run (``Task.on_fit_end``) the run folder gets

- ``teacher.safetensors``: the full autoencoder of the best validation epoch (the last
  one without validation), frozen backbone included, so Stage II needs no teacher files;
  its metadata holds the resolved :class:`AutoencoderConfig`, the teacher name and the
  backbone's architecture as JSON. :func:`load_autoencoder` rebuilds the model from it.
- ``plots/reconstruction.png``: a few validation clouds, their patches and the
  reconstruction (:func:`plot_reconstruction`).

CLI::

    act3d pretrain-teacher --config tiny|small|paper|FILE [--data SOURCE] [--teacher NAME]
                           [--set a.b=v ...] [--resume RUN_DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from act3d.checkpoint import load_weights, read_weights_metadata, save_weights
from act3d.config import (
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
    to_dict,
)
from act3d.models.autoencoder import (
    ACTAutoencoder,
    AutoencoderConfig,
    autoencoder_loss,
    kl_weight_schedule,
    tau_schedule,
)
from act3d.models.teachers.base import BlockStackTeacher, TeacherBackbone
from act3d.ops import chamfer_distance, group
from act3d.train.common import DataConfig, build_pretraining_split
from act3d.train.engine import FitResult, Task, fit, unwrap_model

__all__ = [
    "FORMAT",
    "STAGE",
    "TEACHER_FILE",
    "Reconstruction",
    "Stage1Config",
    "Stage1Schedule",
    "Stage1Task",
    "load_autoencoder",
    "plot_reconstruction",
    "pretrain_teacher",
    "reconstruct",
    "register",
    "save_autoencoder",
]

STAGE = "pretrain-teacher"
FORMAT = "act3d.stage1.autoencoder/1"
TEACHER_FILE = "teacher.safetensors"
_CODE_CHOICES = ("argmax", "sample", "soft")


# ----------------------------------------------------------------------------- config


@dataclass
class Stage1Schedule:
    """Gumbel temperature and KL weight as functions of the global optimiser iteration.

    ``tau``: cosine ``tau_start -> tau_end`` over ``tau_iters`` iterations, then ``tau_end``.
    ``beta``: 0 for ``kl_zero_iters`` iterations, then cosine ``0 -> kl_max`` over
    ``kl_ramp_iters``, then ``kl_max``. ``tau_iters`` / ``kl_ramp_iters`` ``null``: the whole
    run (resp. the rest of it after ``kl_zero_iters``). Defaults: the paper's.
    """

    tau_start: float = 1.0
    tau_end: float = 0.0625
    tau_iters: int | None = 100_000
    kl_max: float = 0.1
    kl_zero_iters: int = 10_000
    kl_ramp_iters: int | None = 100_000

    def __post_init__(self) -> None:
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ValueError(
                "schedule.tau_start and schedule.tau_end must be positive, "
                f"got {self.tau_start}, {self.tau_end}"
            )
        if self.kl_max < 0 or self.kl_zero_iters < 0:
            raise ValueError(
                "schedule.kl_max and schedule.kl_zero_iters must be >= 0, "
                f"got {self.kl_max}, {self.kl_zero_iters}"
            )
        for key in ("tau_iters", "kl_ramp_iters"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"schedule.{key} must be positive or null, got {value}")

    def tau(self, it: int, total: int) -> float:
        """Gumbel-softmax temperature at iteration ``it`` of a ``total``-iteration run."""
        span = self.tau_iters if self.tau_iters is not None else max(total, 1)
        return tau_schedule(it, span, self.tau_start, self.tau_end)

    def kl_weight(self, it: int, total: int) -> float:
        """KL weight beta at iteration ``it`` of a ``total``-iteration run."""
        ramp = self.kl_ramp_iters if self.kl_ramp_iters is not None else max(total - self.kl_zero_iters, 1)
        return kl_weight_schedule(it, self.kl_zero_iters, ramp, self.kl_max)


@dataclass
class Stage1Config:
    """Everything ``act3d pretrain-teacher`` runs on (defaults: ACT_SPEC §1 with MiniLM).

    Attributes:
        data: which clouds (random subset of ``num_points`` per shape, normalised).
        model: the autoencoder; ``num_groups`` / ``group_size`` also set the grouping.
        teacher: a :func:`act3d.models.teachers.build_teacher` name (``minilm``,
            ``vit-b[:FILE]``, ``dinov2-s``, ``random:<shape>``, ...).
        schedule: Gumbel temperature and KL weight per iteration.
        plot_samples: validation clouds drawn in ``plots/reconstruction.png`` (0: none).
        optim, runtime, run: the engine's sections.
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(source="synthetic", num_points=1024))
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    teacher: str = "minilm"
    schedule: Stage1Schedule = field(default_factory=Stage1Schedule)
    plot_samples: int = 4
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=5e-4, weight_decay=5e-4, epochs=300, warmup_epochs=10, batch_size=64
        )
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(
        default_factory=lambda: RunConfig(name="teacher", best_metric="val/cd_l1", best_mode="min")
    )

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("teacher must name a backbone, e.g. 'minilm'")
        if self.plot_samples < 0:
            raise ValueError(f"plot_samples must be >= 0, got {self.plot_samples}")


# ----------------------------------------------------------------------------- reconstruction


@dataclass
class Reconstruction:
    """What :func:`reconstruct` returns for clouds ``points: (B, N, 3)``.

    Attributes:
        patches: (B, G, k, 3) input patches relative to their centers.
        centers: (B, G, 3) patch centers.
        coarse: (B, G, k / grid², 3) reconstructed coarse points, patch-local.
        fine: (B, G, k, 3) reconstructed fine points, patch-local.
    """

    patches: Tensor
    centers: Tensor
    coarse: Tensor
    fine: Tensor

    @property
    def cloud(self) -> Tensor:
        """(B, G*k, 3) the fine reconstruction assembled in cloud coordinates."""
        return _assemble(self.fine, self.centers)

    @property
    def coarse_cloud(self) -> Tensor:
        """(B, G*k/grid², 3) the coarse reconstruction in cloud coordinates."""
        return _assemble(self.coarse, self.centers)


def _assemble(local: Tensor, centers: Tensor) -> Tensor:
    """(B, G, m, 3) patch-local points + (B, G, 3) centers -> (B, G*m, 3)."""
    B = local.shape[0]
    return (local + centers.unsqueeze(2)).reshape(B, -1, 3)


def reconstruct(
    model: ACTAutoencoder, points: Tensor, codes: str = "argmax", tau: float = 1.0
) -> Reconstruction:
    """Group clouds with the model's grouping and autoencode them.

    Runs in whatever mode and grad context the caller set (use ``model.eval()`` and
    ``torch.no_grad()`` for evaluation).

    Args:
        model: a Stage I autoencoder.
        points: (B, N, 3) clouds, N >= model.config.num_groups, model.config.group_size.
        codes: ``"argmax"`` — the most likely code per patch (deterministic);
            ``"sample"`` — a hard Gumbel sample at ``tau``; ``"soft"`` — the relaxed
            Gumbel-softmax mixture at ``tau`` (what training uses).
        tau: Gumbel temperature for ``"sample"`` / ``"soft"``.

    Returns:
        A :class:`Reconstruction`.
    """
    if codes not in _CODE_CHOICES:
        raise ValueError(f"unknown codes {codes!r}; valid: {', '.join(_CODE_CHOICES)}")
    cfg = model.config
    with torch.no_grad():
        patches, centers = group(points, cfg.num_groups, cfg.group_size)  # (B,G,k,3), (B,G,3)
    logits = model.tokenize(patches, centers)  # (B, G, K)
    tokens = model.codebook.embed(model.codebook.sample_codes(logits, codes, tau))  # (B, G, C)
    coarse, fine = model.decode(model.encode(tokens, centers))
    # point coordinates in the clouds' dtype (fp32) also under bf16/fp16 autocast
    return Reconstruction(patches, centers, coarse.to(points.dtype), fine.to(points.dtype))


# ----------------------------------------------------------------------------- task


class Stage1Task(Task):
    """Stage I for the training engine.

    Args:
        cfg: the stage config.
        teacher: builds the backbone; default ``build_teacher(cfg.teacher)``. Any
            :class:`TeacherBackbone` works (tests pass a tiny ``BlockStackTeacher``);
            ``teacher.safetensors`` records its architecture, so :func:`load_autoencoder`
            rebuilds it without this callable.

    Raises:
        ValueError: a grouping that does not fit ``data.num_points``.
    """

    def __init__(self, cfg: Stage1Config, teacher: Callable[[], TeacherBackbone] | None = None) -> None:
        m, d = cfg.model, cfg.data
        if m.num_groups > d.num_points or m.group_size > d.num_points:
            raise ValueError(
                f"model.num_groups={m.num_groups} and model.group_size={m.group_size} must not "
                f"exceed data.num_points={d.num_points}"
            )
        self.cfg = cfg
        self._teacher_factory = teacher
        self._val_set: Dataset | None = None
        self.tau = cfg.schedule.tau(0, 1)
        self.kl_weight = cfg.schedule.kl_weight(0, 1)

    # -- model and data ---------------------------------------------------------

    def build_teacher(self) -> TeacherBackbone:
        """The backbone: the injected factory's, else ``build_teacher(cfg.teacher)``."""
        if self._teacher_factory is not None:
            return self._teacher_factory()
        from act3d.models.teachers import build_teacher

        return build_teacher(self.cfg.teacher)

    def build_model(self) -> ACTAutoencoder:
        return ACTAutoencoder(self.cfg.model, self.build_teacher())

    def _dataset(self, split: str, train: bool, limit: int | None) -> Dataset:
        return build_pretraining_split(self.cfg.data, split, train, limit, self.cfg.runtime.seed)

    def train_dataset(self) -> Dataset:
        return self._dataset(self.cfg.data.train_split, True, self.cfg.data.num_samples)

    def val_dataset(self) -> Dataset | None:
        if self.cfg.data.val_split is None:
            return None
        self._val_set = self._dataset(self.cfg.data.val_split, False, self.cfg.data.val_samples)
        return self._val_set

    # -- steps ------------------------------------------------------------------

    def on_step_start(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Set ``tau`` and the KL weight from the global iteration."""
        self.tau = self.cfg.schedule.tau(step, total_steps)
        self.kl_weight = self.cfg.schedule.kl_weight(step, total_steps)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Any]]:
        """Group, autoencode with the current ``tau``, Stage I loss. batch["points"]: (B, N, 3)."""
        cfg = self.cfg.model
        with torch.no_grad():
            patches, centers = group(batch["points"], cfg.num_groups, cfg.group_size)
        out = model(patches, centers, tau=self.tau)
        losses = autoencoder_loss(out, patches, self.kl_weight)
        logs = {
            "cd_coarse": losses["cd_coarse"].detach(),
            "cd_fine": losses["cd_fine"].detach(),
            "kl": losses["kl"].detach(),
            "tau": self.tau,
            "kl_weight": self.kl_weight,
        }
        return losses["loss"], logs

    def validation_step(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        """Sums over the batch of whole-cloud CD-L1 (fine, coarse) and per-patch CD-L1."""
        points = batch["points"]  # (B, N, 3)
        rec = reconstruct(model, points, codes="argmax")
        B, G, k, _ = rec.patches.shape
        patch_cd = chamfer_distance(
            rec.fine.reshape(B * G, k, 3), rec.patches.reshape(B * G, k, 3), norm=1, reduction="none"
        ).reshape(B, G)
        return {
            "count": B,
            "cd_l1": chamfer_distance(rec.cloud, points, norm=1, reduction="none").sum(),
            "cd_l1_coarse": chamfer_distance(rec.coarse_cloud, points, norm=1, reduction="none").sum(),
            "cd_l1_patch": patch_cd.mean(dim=1).sum(),
        }

    # -- end of run -------------------------------------------------------------

    def on_fit_end(self, model: nn.Module, run_dir: Path) -> None:
        """Write ``teacher.safetensors`` (best epoch's weights) and ``plots/reconstruction.png``."""
        model = unwrap_model(model)
        best = run_dir / "checkpoints" / "best.safetensors"
        extra: dict[str, str] = {}
        if best.is_file():
            chosen = copy.deepcopy(model)
            chosen.load_state_dict(load_weights(best, device=next(model.parameters()).device))
            meta = read_weights_metadata(best)
            extra = {"epoch": meta.get("epoch", ""), "selected_by": self.cfg.run.best_metric or ""}
        else:
            chosen = model
            extra = {"selected_by": "last epoch"}
        save_autoencoder(chosen, run_dir / TEACHER_FILE, self.cfg.teacher, extra)
        if self.cfg.plot_samples and self._val_set is not None and self.cfg.run.plots:
            self._draw(chosen, run_dir / "plots" / "reconstruction.png")

    def _draw(self, model: ACTAutoencoder, path: Path) -> None:
        n = min(self.cfg.plot_samples, len(self._val_set))
        device = next(model.parameters()).device
        points = torch.stack([self._val_set[i]["points"] for i in range(n)]).to(device)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            rec = reconstruct(model, points, codes="argmax")
            cd = chamfer_distance(rec.cloud, points, norm=1, reduction="none")
        model.train(was_training)
        plot_reconstruction(points, rec, path, cd_l1=cd)


def pretrain_teacher(
    cfg: Stage1Config,
    teacher: Callable[[], TeacherBackbone] | None = None,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> FitResult:
    """Run Stage I; the autoencoder lands in ``<run dir>/teacher.safetensors``.

    Args:
        cfg: the config.
        teacher: optional backbone factory (see :class:`Stage1Task`).
        run_dir: an explicit run folder; resume: a run folder to continue.

    Returns:
        The engine's :class:`~act3d.train.engine.FitResult`.
    """
    return fit(Stage1Task(cfg, teacher), cfg, stage=STAGE, run_dir=run_dir, resume=resume)


# ----------------------------------------------------------------------------- export / import


def _teacher_arch(teacher: TeacherBackbone) -> dict[str, Any]:
    """A JSON-able description that rebuilds ``teacher``'s architecture without files."""
    from act3d.models.teachers.hf import HFTeacher

    if isinstance(teacher, HFTeacher):
        return {"kind": "hf", "family": teacher.family, "config": teacher.config.to_dict()}
    if isinstance(teacher, BlockStackTeacher):
        block = teacher.blocks[0]
        return {
            "kind": "blocks",
            "embed_dim": teacher.embed_dim,
            "depth": teacher.num_blocks,
            "num_heads": block.attn.num_heads,
            "mlp_ratio": block.mlp.fc1.out_features / teacher.embed_dim,
            "qkv_bias": block.attn.qkv.bias is not None,
            "norm_eps": teacher.norm.eps,
        }
    raise ValueError(
        f"cannot describe a {type(teacher).__name__} teacher for export; supported: "
        "HFTeacher, BlockStackTeacher"
    )


def _teacher_from_arch(arch: Mapping[str, Any], name: str) -> TeacherBackbone:
    """A freshly initialised backbone of the architecture :func:`_teacher_arch` described."""
    kind = arch.get("kind")
    if kind == "blocks":
        return BlockStackTeacher(
            int(arch["embed_dim"]),
            int(arch["depth"]),
            int(arch["num_heads"]),
            mlp_ratio=float(arch["mlp_ratio"]),
            qkv_bias=bool(arch["qkv_bias"]),
            norm_eps=float(arch["norm_eps"]),
            name=name,
        )
    if kind == "hf":
        from act3d.models.teachers.hf import hf_teacher_from_config

        family = arch.get("family")
        if family == "bert":
            from transformers import BertConfig as config_cls
        elif family == "dinov2":
            from transformers import Dinov2Config as config_cls
        else:
            raise ValueError(f"unknown Hugging Face teacher family {family!r}; valid: bert, dinov2")
        teacher = hf_teacher_from_config(config_cls.from_dict(dict(arch["config"])), name=name)
        return teacher
    raise ValueError(f"unknown teacher architecture kind {kind!r}; valid: blocks, hf")


def save_autoencoder(
    model: ACTAutoencoder,
    path: str | os.PathLike[str],
    teacher_name: str,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write every weight of ``model`` (frozen backbone included) with rebuild metadata.

    Metadata: ``format``, ``autoencoder_config`` (JSON of the :class:`AutoencoderConfig`),
    ``teacher`` (the name it was built from), ``teacher_arch`` (JSON architecture),
    ``teacher_source`` and any ``extra`` strings.
    """
    model = unwrap_model(model)
    if not isinstance(model, ACTAutoencoder):
        raise ValueError(f"model must be an ACTAutoencoder, got {type(model).__name__}")
    meta = {
        **dict(extra or {}),
        "format": FORMAT,
        "autoencoder_config": json.dumps(to_dict(model.config)),
        "teacher": teacher_name,
        "teacher_arch": json.dumps(_teacher_arch(model.teacher)),
        "teacher_source": str(getattr(model.teacher, "source", "")),
    }
    return save_weights(model.state_dict(), path, meta)


def _teacher_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / TEACHER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {TEACHER_FILE} in {path.parent} (is it a finished Stage I run?)")
    elif not path.is_file():
        raise FileNotFoundError(f"Stage I checkpoint not found: {path}")
    return path


def load_autoencoder(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> ACTAutoencoder:
    """Rebuild a Stage I autoencoder from ``teacher.safetensors`` alone.

    The backbone is built at random init with the recorded architecture (no pretrained
    file is read), then every weight is loaded; the key sets and shapes must match exactly.

    Args:
        path: a Stage I run folder or its ``teacher.safetensors``.
        device: where the model goes.

    Returns:
        The :class:`ACTAutoencoder` in eval mode (a frozen backbone stays frozen).

    Raises:
        FileNotFoundError: no such file / no teacher.safetensors in the folder.
        ValueError: not a Stage I file, or keys / shapes that do not match.
    """
    path = _teacher_file(path)
    meta = read_weights_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a Stage I autoencoder file (format {meta.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        config = config_from_dict(AutoencoderConfig, json.loads(meta["autoencoder_config"]), str(path))
        arch = json.loads(meta["teacher_arch"])
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: broken metadata ({err})") from err
    teacher = _teacher_from_arch(arch, meta.get("teacher", "teacher"))
    teacher.source = str(path)
    model = ACTAutoencoder(config, teacher)
    state = load_weights(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            shapes = f"{tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {k!r}: {shapes})")
        raise ValueError(f"{path}: weights do not match the recorded architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- picture


def plot_reconstruction(
    points: Tensor, rec: Reconstruction, path: str | os.PathLike[str], cd_l1: Tensor | None = None
) -> Path:
    """Draw input clouds, their patches and the reconstruction side by side (headless PNG).

    One row per cloud: the input cloud, its patches (k points per patch put back at the
    centers, one colour per patch) and the reconstruction (fine points at the centers,
    same colours).

    Args:
        points: (B, N, 3) input clouds.
        rec: their :class:`Reconstruction`.
        path: the PNG to write.
        cd_l1: (B,) optional per-cloud CD-L1, shown in the titles.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = points.detach().float().cpu()
    inputs = _assemble(rec.patches.detach().float().cpu(), rec.centers.detach().float().cpu())
    outputs = _assemble(rec.fine.detach().float().cpu(), rec.centers.detach().float().cpu())
    B, G, k, _ = rec.patches.shape
    colours = torch.arange(G).repeat_interleave(k).numpy()
    fig = Figure(figsize=(9.6, 3.2 * B))
    FigureCanvasAgg(fig)
    columns = (
        ("input", points, None),
        (f"input patches ({G}x{k})", inputs, colours),
        ("reconstruction", outputs, colours),
    )
    for b in range(B):
        for c, (title, clouds, colour) in enumerate(columns):
            ax = fig.add_subplot(B, 3, 3 * b + c + 1, projection="3d")
            xyz = clouds[b].numpy()
            # y is up in the data sets: plot (x, z, y)
            style = {"c": colour, "cmap": "tab20"} if colour is not None else {"c": "0.3"}
            ax.scatter(xyz[:, 0], xyz[:, 2], xyz[:, 1], s=4, depthshade=False, linewidths=0, **style)
            ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
            ax.set_box_aspect((1, 1, 1), zoom=1.5)
            ax.set_axis_off()
            ax.view_init(elev=20, azim=-60)
            label = title
            if c == 2 and cd_l1 is not None:
                label += f"\nCD-L1 {float(cd_l1[b]):.4f}"
            ax.set_title(label, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


# ----------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``act3d pretrain-teacher`` to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        STAGE,
        help="Stage I: train the cross-modal autoencoder (the teacher)",
        description="Train ACT's Stage I autoencoder around a frozen pretrained Transformer; "
        f"writes <run dir>/{TEACHER_FILE} (all weights, for `act3d pretrain --teacher`) and "
        "<run dir>/plots/reconstruction.png.",
    )
    parser.add_argument(
        "--config", dest="preset", default=None, metavar="CONFIG",
        help="preset name (tiny, small, paper) or a YAML file (same as --preset)",
    )  # fmt: skip
    parser.add_argument("--data", metavar="SOURCE", default=None, help="data source, e.g. synthetic or shapenet:DIR")
    parser.add_argument(
        "--teacher", metavar="NAME", default=None,
        help="teacher backbone: minilm, dinov2-s, vit-b[:FILE], random:<shape>, ... "
        "(see `act3d teachers list`)",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", default=None, help="parent folder of the run folder (run.out_dir)")
    add_config_arguments(parser, STAGE)
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    cfg = config_from_args(Stage1Config, args, STAGE)
    changes: dict[str, Any] = {}
    if args.data is not None:
        changes["data"] = dataclasses.replace(cfg.data, source=args.data)
    if args.teacher is not None:
        changes["teacher"] = args.teacher
    if args.out is not None:
        changes["run"] = dataclasses.replace(cfg.run, out_dir=args.out)
    cfg = dataclasses.replace(cfg, **changes)
    result = pretrain_teacher(cfg, resume=args.resume)
    best = result.best.get("val/cd_l1")
    print(f"run: {result.run_dir}")
    if best is not None:
        print(f"best val CD-L1: {best:.6f} (epoch {result.best_epoch})")
    else:
        print(f"last train loss: {result.last.get('train/loss', float('nan')):.6f} (no validation)")
    print(f"teacher: {result.run_dir / TEACHER_FILE}")
    return 0
