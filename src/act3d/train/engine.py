"""The training engine every stage plugs into: :func:`fit` runs a :class:`Task`.

A stage describes *what* to train by subclassing :class:`Task`; :func:`fit` does the rest:
device and precision, seeding, data loading (seeded shuffling, DDP sharding), AdamW with a
per-iteration warm-up + cosine schedule, gradient accumulation and clipping, per-epoch
validation, the run folder (config, metrics, TensorBoard, checkpoints, plots, README),
progress display, and exact resume.

Usage (a classifier, shortened)::

    from act3d.train.engine import Task, fit

    class Finetune(Task):
        def __init__(self, cfg):
            self.cfg = cfg

        def build_model(self):
            return Classifier(self.cfg.model)

        def train_dataset(self):
            return build_dataset(self.cfg.data.source, "train", 1024)

        def val_dataset(self):
            return build_dataset(self.cfg.data.source, "test", 1024)

        def training_step(self, model, batch, step):
            logits = model(batch["points"])                   # (B, classes)
            loss = F.cross_entropy(logits, batch["label"])
            acc = (logits.argmax(-1) == batch["label"]).float().mean()
            return loss, {"acc": acc}

        def validation_step(self, model, batch):              # sums over the batch
            logits = model(batch["points"])
            return {
                "count": len(logits),
                "loss": F.cross_entropy(logits, batch["label"], reduction="sum"),
                "acc": (logits.argmax(-1) == batch["label"]).sum(),
            }

    cfg = load_config(FinetuneConfig, "tiny", ["optim.lr=1e-3"], stage="finetune")
    result = fit(Finetune(cfg), cfg, stage="finetune")      # or resume="runs/finetune-..."
    print(result.best["val/acc"], result.best_epoch, result.run_dir)

``cfg`` is any dataclass with ``optim: OptimConfig``, ``runtime: RuntimeConfig`` and
``run: RunConfig`` (see :mod:`act3d.config`); the whole of it is saved as ``config.yaml``.

Contracts:

- Batches reach ``training_step``/``validation_step`` already on the device (tensors inside
  dicts/lists/tuples are moved). ``training_step`` gets the possibly DDP-wrapped or compiled
  model: do the trainable computation through ``model(...)`` (that is what synchronises
  gradients); reach attributes with :func:`unwrap_model`. ``validation_step`` gets the bare
  model in eval mode under ``torch.no_grad()``.
- ``training_step`` returns ``(loss, logs)``: a scalar loss (mean over the rank's batch) and
  named scalars (floats or 0-d tensors, the same names on every rank). The engine averages
  them over steps and ranks; ``loss`` and ``lr`` are logged automatically.
- ``validation_step`` returns *sums* over the batch (numbers or tensors of any shape, e.g. a
  confusion matrix). The engine adds them over batches and ranks (each validation sample is
  seen exactly once: the shards are not padded) and hands the totals to
  ``validation_metrics``; the default divides every scalar by the ``count`` entry.
- Metric names in the run are ``train/<name>`` and ``val/<name>``; ``run.best_metric`` picks
  one for ``checkpoints/best.safetensors``.
- Epoch numbers are 1-based in records, file names and :class:`FitResult`.
- The engine calls ``model.train()`` before every epoch and ``model.eval()`` for validation;
  a model that keeps parts in eval mode (a frozen, BN-statistics backbone) overrides
  ``train()``. ``on_step_start(model, step, total_steps)`` runs before every optimiser step
  (per-iteration schedules such as a Gumbel temperature); ``on_fit_end(model, run_dir)``
  once on rank 0 at the end (pictures).
- With ``num_workers > 0`` the datasets and ``collate`` go to worker processes, so keep
  them picklable.

Reproducibility: everything is seeded from ``runtime.seed``; the sample order of epoch
``e`` is a function of ``(seed, e)`` only (:class:`~torch.utils.data.DistributedSampler`,
also with one process), and DataLoader workers are seeded from ``(seed, rank, e)``.
Checkpoints are written at the end of every epoch with the model, optimiser, schedule,
GradScaler and the RNG states of every rank, so ``fit(..., resume=run_dir)`` after a crash
(even SIGKILL) continues with exactly the loss curve of an uninterrupted run on CPU (with
``num_workers=0`` or, with workers, when augmentation uses only the worker's RNG).

The run folder ``<run.out_dir>/<stage>-<run.name>-<YYYYmmdd-HHMMSS>/``:

- ``config.yaml``: the resolved config; ``metrics.jsonl``: one JSON record per log line
  ``{"step", "epoch", "split": "train_step"|"train"|"val", "values": {...}}`` (epoch records
  also carry ``"time"``); ``tensorboard/``: the same scalars;
- ``checkpoints/``: ``last.pt`` (training state for resume, names its weights file),
  ``epoch-NNNN.safetensors`` (the last epoch and periodic ones), ``last.safetensors``,
  ``best.safetensors``; ``plots/``: PNG curves, redrawn after an epoch when 30 s have
  passed since the last drawing and after the last epoch; ``README.md``: a summary.

Under ``torchrun`` only rank 0 writes files and draws progress; the global batch
``optim.batch_size`` stays the same for any number of processes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.data.dataloader import default_collate

from act3d.checkpoint import (
    atomic_path,
    capture_rng_state,
    load_state,
    load_weights,
    restore_rng_state,
    save_state,
    save_weights,
)
from act3d.config import OptimConfig, RunConfig, RuntimeConfig, config_diff, save_config, to_dict
from act3d.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    per_rank_batch_size,
    shutdown_distributed,
)
from act3d.train.optim import WarmupCosine, build_optimizer, param_groups
from act3d.train.progress import EpochProgress, format_duration, resolve_progress_mode

__all__ = [
    "FitResult",
    "Task",
    "TrainConfig",
    "fit",
    "new_run_dir",
    "resolve_device",
    "resolve_precision",
    "unwrap_model",
]

_STATE_FORMAT = 1
# Settings a resumed run may change without changing what it computes.
_RESUME_MAY_CHANGE = (
    "runtime.num_workers",
    "runtime.threads",
    "runtime.device",
    "runtime.compile",
    "run.out_dir",
    "run.log_every",
    "run.progress",
    "run.tensorboard",
    "run.plots",
)
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Curves are redrawn after an epoch when this long has passed since the last drawing, and
# always after the last epoch.
_PLOT_EVERY_S = 30.0
# Datasets are built under their own seed, so their construction does not shift model init.
_DATA_SEED_SALT = 0xDA7A


class TrainConfig(Protocol):
    """What :func:`fit` reads from a stage config (which has more fields)."""

    optim: OptimConfig
    runtime: RuntimeConfig
    run: RunConfig


class Task:
    """What a stage trains. Override the first three methods and, with a validation set,
    ``val_dataset`` and ``validation_step``; the rest have working defaults.
    """

    def build_model(self) -> nn.Module:
        """A fresh model (on the CPU; the engine moves it). Called after seeding."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        """The training set (map-style: ``__len__`` and ``__getitem__``)."""
        raise NotImplementedError

    def val_dataset(self) -> Dataset | None:
        """The validation set, or ``None`` for none."""
        return None

    def training_step(
        self, model: nn.Module, batch: Any, step: int
    ) -> tuple[Tensor, Mapping[str, float | Tensor]]:
        """``(scalar loss, named scalars)`` for one micro-batch; ``step`` is the optimiser step."""
        raise NotImplementedError

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, float | Tensor]:
        """Sums over one validation batch, e.g. ``{"count": B, "loss": sum, "correct": n}``."""
        raise NotImplementedError(f"{type(self).__name__} has a val_dataset but no validation_step")

    def validation_metrics(self, sums: Mapping[str, Tensor]) -> dict[str, float]:
        """Metrics from the totals of ``validation_step`` over the whole validation set.

        Default: every entry divided by ``sums["count"]`` (entries must be scalars).
        """
        if "count" not in sums:
            raise ValueError(
                "validation_step must return a 'count' entry for the default "
                "validation_metrics (or override validation_metrics)"
            )
        count = float(sums["count"])
        out: dict[str, float] = {}
        for name, total in sums.items():
            if name == "count":
                continue
            if total.numel() != 1:
                raise ValueError(
                    f"validation entry {name!r} has shape {tuple(total.shape)}; override "
                    "validation_metrics to reduce non-scalar sums"
                )
            out[name] = float(total) / max(count, 1.0)
        return out

    def collate(self, samples: list[Any]) -> Any:
        """Samples -> batch (default: ``torch.utils.data.default_collate``)."""
        return default_collate(samples)

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
        """Optimiser groups (default: :func:`act3d.train.optim.param_groups`). A group may set
        ``lr_scale``."""
        return param_groups(model, cfg.weight_decay, cfg.no_decay_names)

    def on_step_start(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called before every optimiser step with the bare model (e.g. Gumbel temperature)."""

    def on_fit_end(self, model: nn.Module, run_dir: Path) -> None:
        """Called once on rank 0 after training (e.g. to draw pictures into ``run_dir``)."""


@dataclass
class FitResult:
    """What a run produced. Metric names are ``train/<name>`` and ``val/<name>``.

    ``last`` holds the last epoch's training metrics and the latest validation; ``best`` the
    metrics of the epoch chosen by ``run.best_metric`` (empty without one).
    """

    run_dir: Path
    epochs: int
    steps: int
    last: dict[str, float]
    best: dict[str, float]
    best_epoch: int | None
    best_metric: str | None
    last_weights: Path
    best_weights: Path | None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside DDP and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("runtime.device='cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank)
    raise ValueError(f"unknown runtime.device {name!r}; valid choices: 'auto', 'cpu', 'cuda'")


def resolve_precision(name: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 (fp16 on GPUs without bf16) on CUDA, fp32 on CPU."""
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown runtime.precision {name!r}; valid choices: 'auto', 'fp32', 'bf16', 'fp16'")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("runtime.precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return name


# ----------------------------------------------------------------------------- helpers


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, non_blocking) for v in batch)
    return batch


def _as_stat(value: float | Tensor, device: torch.device) -> Tensor:
    t = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value, device=device)
    return t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)


class _ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every sample on exactly one rank."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _MetricsLog:
    """``metrics.jsonl`` + TensorBoard on rank 0; a record list for plots and results."""

    def __init__(self, run_dir: Path, active: bool, tensorboard: bool, offset: int, purge_step: int | None) -> None:
        self.records: list[dict[str, Any]] = []
        self.path = run_dir / "metrics.jsonl"
        self._fh: IO[str] | None = None
        self._tb: Any = None
        if not active:
            return
        if self.path.exists():
            with open(self.path, "rb+") as fh:
                fh.truncate(offset)
            with open(self.path, encoding="utf-8") as fh:
                self.records = [json.loads(line) for line in fh if line.strip()]
        self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def write(self, step: int, epoch: int, split: str, values: Mapping[str, float], **extra: Any) -> None:
        if self._fh is None:
            return
        record = {"step": step, "epoch": epoch, "split": split, "values": dict(values), **extra}
        self.records.append(record)
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{split}/{name}", value, step)

    def offset(self) -> int:
        """Flush to disk and return the file size (what a resume truncates back to)."""
        if self._fh is None:
            return 0
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if self._tb is not None:
            self._tb.flush()
        return self._fh.tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


@dataclass
class _State:
    """Counters and bookkeeping that go into ``last.pt`` besides the module states."""

    epoch: int = 0
    step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    periodic: list[str] = field(default_factory=list)
    train_seconds: float = 0.0


def new_run_dir(out_dir: str | os.PathLike[str], stage: str, name: str) -> Path:
    """Create and return ``<out_dir>/<stage>-<name>-<YYYYmmdd-HHMMSS>`` (``-1``, ``-2``, ...
    appended when that folder exists already)."""
    base = f"{stage}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        candidate = root / (base if i == 0 else f"{base}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` atomically (hard link, or a copy)."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _check_config(cfg: Any) -> None:
    for name, cls in (("optim", OptimConfig), ("runtime", RuntimeConfig), ("run", RunConfig)):
        value = getattr(cfg, name, None)
        if not isinstance(value, cls):
            raise ValueError(f"fit needs cfg.{name} to be a {cls.__name__}, got {type(value).__name__}")


def _check_resume_config(saved_path: Path, cfg: Any) -> None:
    if not saved_path.is_file():
        raise FileNotFoundError(f"cannot resume: {saved_path} is missing")
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    diff = config_diff(saved, to_dict(cfg))
    bad = {k: v for k, v in diff.items() if k not in _RESUME_MAY_CHANGE}
    if bad:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in bad.items())
        raise ValueError(
            f"cannot resume {saved_path.parent}: the config differs from its config.yaml at {lines}; "
            f"resume with the saved config (only {', '.join(_RESUME_MAY_CHANGE)} may change)"
        )


# ----------------------------------------------------------------------------- the run


class _Run:
    """One call of :func:`fit`: builds everything, then loops over epochs."""

    def __init__(self, task: Task, cfg: Any, stage: str, run_dir: str | os.PathLike[str] | None, resume: str | os.PathLike[str] | None) -> None:
        if not stage or "/" in stage:
            raise ValueError(f"stage must be a non-empty name without '/', got {stage!r}")
        if run_dir is not None and resume is not None:
            raise ValueError("give run_dir or resume, not both (resume continues in its own folder)")
        self.task, self.cfg, self.stage = task, cfg, stage
        _check_config(cfg)
        self.optim_cfg: OptimConfig = cfg.optim
        self.rt: RuntimeConfig = cfg.runtime
        self.run_cfg: RunConfig = cfg.run
        device = resolve_device(self.rt.device)
        self.precision = resolve_precision(self.rt.precision, device)
        self.dist: DistInfo = init_distributed(device.type == "cuda")
        try:
            self.device = resolve_device(self.rt.device, self.dist.local_rank)
            self.micro_batch = per_rank_batch_size(
                self.optim_cfg.batch_size, self.dist.world_size, self.optim_cfg.grad_accum
            )
        except BaseException:
            shutdown_distributed(self.dist)
            raise
        self.resume = Path(resume) if resume is not None else None
        self._explicit_dir = Path(run_dir) if run_dir is not None else None
        self.state = _State()

    # -- set-up -----------------------------------------------------------------

    def _make_run_dir(self) -> Path:
        if self.resume is not None:
            if not (self.resume / "checkpoints" / "last.pt").is_file():
                raise FileNotFoundError(f"cannot resume: no checkpoints/last.pt in {self.resume}")
            return self.resume
        path: Path | None = None
        if self.dist.is_main:
            if self._explicit_dir is not None:
                path = self._explicit_dir
                if (path / "checkpoints" / "last.pt").exists():
                    raise ValueError(f"run folder {path} already holds a run; pass resume={str(path)!r} to continue it")
                path.mkdir(parents=True, exist_ok=True)
            else:
                path = new_run_dir(self.run_cfg.out_dir, self.stage, self.run_cfg.name)
        return Path(broadcast_object(str(path) if path is not None else None))

    def _build_loaders(self) -> None:
        task, rt = self.task, self.rt
        _seed_everything(_derive_seed(rt.seed, _DATA_SEED_SALT))
        self.train_set = task.train_dataset()
        self.val_set = task.val_dataset()
        world, rank = self.dist.world_size, self.dist.rank
        n = len(self.train_set)
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=rt.seed, drop_last=True
        )
        micro_batches = len(self.sampler) // self.micro_batch
        self.steps_per_epoch = micro_batches // self.optim_cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {n} samples, fewer than one global batch "
                f"(optim.batch_size={self.optim_cfg.batch_size}); lower the batch size"
            )
        self.total_steps = self.steps_per_epoch * self.optim_cfg.epochs
        self.pin = self.device.type == "cuda"
        best = self.run_cfg.best_metric
        if best is not None and best.startswith("val/") and self.val_set is None:
            raise ValueError(
                f"run.best_metric={best!r} but the task has no validation set; "
                "use a 'train/<name>' metric or null"
            )

    def _train_loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        generator = torch.Generator()
        generator.manual_seed(_derive_seed(self.rt.seed, self.dist.rank, epoch))
        return DataLoader(
            self.train_set,
            batch_size=self.micro_batch,
            sampler=self.sampler,
            num_workers=self.rt.num_workers,
            collate_fn=self.task.collate,
            pin_memory=self.pin,
            drop_last=True,
            generator=generator,
        )

    def _val_loader(self) -> DataLoader:
        assert self.val_set is not None
        generator = torch.Generator()
        generator.manual_seed(_derive_seed(self.rt.seed, self.dist.rank, 2**31 - 1))
        return DataLoader(
            self.val_set,
            batch_size=self.micro_batch * self.optim_cfg.grad_accum,
            sampler=_ShardSampler(len(self.val_set), self.dist.rank, self.dist.world_size),
            num_workers=self.rt.num_workers,
            collate_fn=self.task.collate,
            pin_memory=self.pin,
            generator=generator,
        )

    def _build_model(self) -> None:
        _seed_everything(self.rt.seed)
        model = self.task.build_model()
        if not isinstance(model, nn.Module):
            raise ValueError(f"build_model must return an nn.Module, got {type(model).__name__}")
        if self.rt.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        groups = self.task.param_groups(self.model, self.optim_cfg)
        self.optimizer = build_optimizer(groups, self.optim_cfg)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scheduler = WarmupCosine.from_config(self.optimizer, self.optim_cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        _seed_everything(_derive_seed(self.rt.seed, self.dist.rank))

    def _wrap_model(self) -> None:
        wrapped: nn.Module = self.model
        self.ddp: DistributedDataParallel | None = None
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=self.rt.find_unused_parameters
            )
            wrapped = self.ddp
        if self.rt.compile:
            wrapped = torch.compile(wrapped)
        self.wrapped = wrapped

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AMP_DTYPES[self.precision])

    # -- checkpoints ------------------------------------------------------------

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _load_checkpoint(self) -> int:
        state = load_state(self.ckpt_dir / "last.pt")
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"{self.ckpt_dir / 'last.pt'}: unsupported format {state.get('format')!r}")
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"cannot resume: {state['steps_per_epoch']} steps per epoch in the checkpoint, "
                f"{self.steps_per_epoch} now (did the data set change?)"
            )
        weights = load_weights(self.ckpt_dir / state["weights"], device=self.device)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        s = self.state
        s.epoch, s.step = int(state["epoch"]), int(state["step"])
        s.best_value, s.best_epoch = state["best_value"], state["best_epoch"]
        s.best_metrics, s.last_metrics = dict(state["best_metrics"]), dict(state["last_metrics"])
        s.periodic, s.train_seconds = list(state["periodic"]), float(state["train_seconds"])
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:
            _seed_everything(_derive_seed(self.rt.seed, self.dist.rank, s.epoch))
            self._say(
                f"resuming with {self.dist.world_size} processes from a run of {len(rng)}: "
                "RNG streams are reseeded, so the curve will not match exactly"
            )
        return int(state["metrics_offset"])

    def _save_checkpoint(self, improved: bool) -> None:
        rng = gather_objects(capture_rng_state())
        if not self.dist.is_main:
            return
        s, epoch = self.state, self.state.epoch
        name = f"epoch-{epoch:04d}.safetensors"
        meta = {
            "format": "act3d-weights-v1",
            "stage": self.stage,
            "epoch": str(epoch),
            "step": str(s.step),
            "config": json.dumps(to_dict(self.cfg)),
        }
        save_weights(self.model.state_dict(), self.ckpt_dir / name, meta)
        every = self.run_cfg.save_every
        if every and epoch % every == 0 and name not in s.periodic:
            s.periodic.append(name)
            if self.run_cfg.keep_last:
                s.periodic = s.periodic[-self.run_cfg.keep_last :]
        state = {
            "format": _STATE_FORMAT,
            "stage": self.stage,
            "epoch": epoch,
            "step": s.step,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "weights": name,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "best_value": s.best_value,
            "best_epoch": s.best_epoch,
            "best_metrics": s.best_metrics,
            "last_metrics": s.last_metrics,
            "periodic": s.periodic,
            "train_seconds": s.train_seconds,
            "metrics_offset": self.log.offset(),
        }
        save_state(state, self.ckpt_dir / "last.pt")
        _link_or_copy(self.ckpt_dir / name, self.ckpt_dir / "last.safetensors")
        if improved:
            _link_or_copy(self.ckpt_dir / name, self.ckpt_dir / "best.safetensors")
        keep = {name, *s.periodic}
        for old in self.ckpt_dir.glob("epoch-*.safetensors"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    # -- loops ------------------------------------------------------------------

    def _train_epoch(self, progress: EpochProgress) -> dict[str, float]:
        task, accum = self.task, self.optim_cfg.grad_accum
        loader = self._train_loader(self.state.epoch)
        batches = iter(itertools.islice(loader, self.steps_per_epoch * accum))
        non_blocking = self.pin
        epoch_sums: dict[str, Tensor] = {}
        window: dict[str, Tensor] = {}
        window_steps = 0
        self.model.train()
        for _ in range(self.steps_per_epoch):
            step = self.state.step
            task.on_step_start(self.model, step, self.total_steps)
            self.optimizer.zero_grad(set_to_none=True)
            values: dict[str, Tensor] = {}
            for micro in range(accum):
                batch = _to_device(next(batches), self.device, non_blocking)
                last_micro = micro == accum - 1
                no_sync = self.ddp.no_sync() if self.ddp is not None and not last_micro else contextlib.nullcontext()
                with no_sync:
                    with self._autocast():
                        loss, logs = task.training_step(self.wrapped, batch, step)
                    if not isinstance(loss, Tensor) or loss.numel() != 1:
                        raise ValueError("training_step must return a scalar loss tensor first")
                    self.scaler.scale(loss / accum).backward()
                for name, value in (("loss", loss), *logs.items()):
                    stat = _as_stat(value, self.device).to(torch.float64)
                    if stat.numel() != 1:
                        raise ValueError(f"training_step log {name!r} must be a scalar, got shape {tuple(stat.shape)}")
                    stat = stat.reshape(()) / accum
                    values[name] = values[name] + stat if name in values else stat
            if self.optim_cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.optim_cfg.grad_clip)
                values["grad_norm"] = norm.detach().to(torch.float64)
            values["lr"] = torch.tensor(self.scheduler.get_lr(), dtype=torch.float64, device=self.device)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.state.step += 1
            for name, value in values.items():
                epoch_sums[name] = epoch_sums[name] + value if name in epoch_sums else value
                window[name] = window[name] + value if name in window else value
            window_steps += 1
            loss_shown = None
            if self.state.step % self.run_cfg.log_every == 0:
                means = self._mean_over_ranks(window, window_steps)
                self._check_finite(means)
                self.log.write(self.state.step, self.state.epoch + 1, "train_step", means)
                loss_shown = means["loss"]
                window, window_steps = {}, 0
            progress.update(self.optim_cfg.batch_size, loss_shown)
        means = self._mean_over_ranks(epoch_sums, self.steps_per_epoch)
        self._check_finite(means)
        return means

    def _mean_over_ranks(self, sums: Mapping[str, Tensor], count: int) -> dict[str, float]:
        names = sorted(sums, key=lambda n: (n != "loss", n))
        if not names:
            return {}
        stacked = torch.stack([sums[n].to(torch.float64) for n in names]) / count
        stacked = all_reduce_sum(stacked) / self.dist.world_size
        return {n: float(v) for n, v in zip(names, stacked.tolist())}

    def _check_finite(self, values: Mapping[str, float]) -> None:
        loss = values.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} at step {self.state.step} (epoch {self.state.epoch + 1}); "
                "try a lower optim.lr, optim.grad_clip, or runtime.precision='fp32'"
            )

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        sums: dict[str, Tensor] = {}
        with self._autocast():
            for batch in self._val_loader():
                out = self.task.validation_step(self.model, _to_device(batch, self.device, self.pin))
                for name, value in out.items():
                    stat = _as_stat(value, self.device)
                    sums[name] = sums[name] + stat if name in sums else stat
        self.model.train()
        if self.dist.enabled:
            specs: dict[str, tuple[tuple[int, ...], str]] = {}
            for part in gather_objects({k: (tuple(v.shape), str(v.dtype)) for k, v in sums.items()}):
                specs.update(part)
            for name in sorted(specs):
                shape, dtype = specs[name]
                if name not in sums:
                    sums[name] = torch.zeros(shape, dtype=getattr(torch, dtype.split(".")[-1]), device=self.device)
                all_reduce_sum(sums[name])
        return self.task.validation_metrics(sums)

    def _update_best(self, metrics: dict[str, float]) -> bool:
        name = self.run_cfg.best_metric
        if name is None:
            return False
        split = name.split("/", 1)[0]
        if not any(k.startswith(split + "/") for k in metrics):
            return False
        if name not in metrics:
            raise ValueError(
                f"run.best_metric={name!r} is not among this run's metrics: {', '.join(sorted(metrics))}"
            )
        value = metrics[name]
        s = self.state
        better = s.best_value is None or (
            value < s.best_value if self.run_cfg.best_mode == "min" else value > s.best_value
        )
        if better and math.isfinite(value):
            s.best_value, s.best_epoch, s.best_metrics = value, s.epoch, dict(metrics)
            return True
        return False

    def _say(self, text: str) -> None:
        if self.progress_mode != "off":
            print(text, file=sys.stderr, flush=True)

    # -- main -------------------------------------------------------------------

    def run(self) -> FitResult:
        self.progress_mode = resolve_progress_mode(self.run_cfg.progress, sys.stderr, self.dist.is_main)
        self.run_dir = self._make_run_dir()
        if self.resume is not None:
            _check_resume_config(self.run_dir / "config.yaml", self.cfg)
        elif self.dist.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
        self._build_loaders()
        self._build_model()
        offset = self._load_checkpoint() if self.resume is not None else None
        self._wrap_model()
        self.log = _MetricsLog(
            self.run_dir,
            self.dist.is_main,
            self.run_cfg.tensorboard,
            0 if offset is None else offset,
            self.state.step + 1 if self.resume is not None else None,
        )
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        verb = "resuming" if self.resume is not None else "run folder"
        self._say(f"{verb}: {self.run_dir}  ({self.device}, {self.precision}, {self.dist.world_size} process(es))")
        try:
            self._epochs()
            barrier()
            if self.dist.is_main:
                self.task.on_fit_end(self.model, self.run_dir)
                self._write_readme(started)
        finally:
            self.log.close()
        result = self._result()
        barrier()
        return result

    def _epochs(self) -> None:
        epochs = self.optim_cfg.epochs
        self._plotted = time.monotonic()
        while self.state.epoch < epochs:
            epoch = self.state.epoch + 1
            progress = EpochProgress(epoch, epochs, self.steps_per_epoch, self.progress_mode, eta_epochs_left=epochs - epoch)
            tic = time.perf_counter()
            train = self._train_epoch(progress)
            seconds = time.perf_counter() - tic
            metrics = {f"train/{k}": v for k, v in train.items() if k != "lr"}
            val: dict[str, float] = {}
            if self.val_set is not None and (epoch % self.run_cfg.val_every == 0 or epoch == epochs):
                val = self._validate()
                metrics.update({f"val/{k}": v for k, v in val.items()})
            self.state.epoch = epoch
            self.state.train_seconds += seconds
            step = self.state.step
            timing = {"epoch_s": seconds, "samples_per_s": progress.samples_per_s}
            self.log.write(step, epoch, "train", {k: v for k, v in train.items() if k != "lr"}, time=timing)
            if val:
                self.log.write(step, epoch, "val", val)
            last = {k: v for k, v in self.state.last_metrics.items() if k.startswith("val/")}
            last.update(metrics)
            self.state.last_metrics = last
            improved = self._update_best(metrics)
            self._save_checkpoint(improved)
            if time.monotonic() - self._plotted >= _PLOT_EVERY_S or epoch == epochs:
                self._plot()
            progress.close(metrics)

    def _plot(self) -> None:
        if self.dist.is_main and self.run_cfg.plots:
            from act3d.train.plots import plot_metrics

            plot_metrics(self.log.records, self.run_dir / "plots", self.steps_per_epoch)
        self._plotted = time.monotonic()

    def _result(self) -> FitResult:
        s = self.state
        best = self.ckpt_dir / "best.safetensors"
        return FitResult(
            run_dir=self.run_dir,
            epochs=s.epoch,
            steps=s.step,
            last=dict(s.last_metrics),
            best=dict(s.best_metrics),
            best_epoch=s.best_epoch,
            best_metric=self.run_cfg.best_metric,
            last_weights=self.ckpt_dir / "last.safetensors",
            best_weights=best if s.best_epoch is not None else None,
        )

    def _write_readme(self, started: str) -> None:
        s, o = self.state, self.optim_cfg
        names = sorted({*s.last_metrics, *s.best_metrics}, key=lambda n: (not n.startswith("train/"), n))
        lines = [
            f"# {self.run_dir.name}",
            "",
            f"Stage `{self.stage}`, run `{self.run_cfg.name}`: {s.epoch} epochs, {s.step} optimiser steps "
            f"({self.steps_per_epoch} per epoch, global batch {o.batch_size}) on {self.device.type}, "
            f"{self.precision}, {self.dist.world_size} process(es).",
            f"Training time {format_duration(s.train_seconds)}; this session started {started}, "
            f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}.",
            "",
            "## Metrics",
            "",
            f"| metric | last (epoch {s.epoch}) | best (epoch {s.best_epoch if s.best_epoch else '-'}) |",
            "|---|---|---|",
        ]
        for name in names:
            last = s.last_metrics.get(name)
            best = s.best_metrics.get(name)
            lines.append(f"| {name} | {'-' if last is None else f'{last:.6g}'} | {'-' if best is None else f'{best:.6g}'} |")
        if self.run_cfg.best_metric is not None:
            lines += ["", f"Best epoch chosen by `{self.run_cfg.best_metric}` ({self.run_cfg.best_mode})."]
        lines += [
            "",
            "## Files",
            "",
            "- `config.yaml`: the resolved config (a resume reads it).",
            "- `metrics.jsonl`: one JSON record per log line: step, epoch, split, values.",
            "- `tensorboard/`: the same scalars (`tensorboard --logdir " + str(self.run_dir / "tensorboard") + "`).",
            "- `checkpoints/last.safetensors`, `checkpoints/best.safetensors`: model weights.",
            "- `checkpoints/last.pt`: optimiser, schedule and RNG state for `--resume " + str(self.run_dir) + "`.",
            "- `checkpoints/epoch-NNNN.safetensors`: the last epoch's and periodic weights.",
            "- `plots/`: loss and metric curves.",
            "",
        ]
        with atomic_path(self.run_dir / "README.md") as tmp:
            tmp.write_text("\n".join(lines), encoding="utf-8")


def fit(
    task: Task,
    cfg: TrainConfig,
    *,
    stage: str = "train",
    run_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> FitResult:
    """Train ``task`` with ``cfg`` and return what it produced.

    Args:
        task: what to train (:class:`Task`).
        cfg: a config with ``optim``, ``runtime`` and ``run`` sections; saved as config.yaml.
        stage: the stage name, the first part of the run folder's name.
        run_dir: use this folder instead of ``<run.out_dir>/<stage>-<name>-<timestamp>``;
            it must not hold a run already.
        resume: a run folder to continue from its last checkpoint; ``cfg`` must equal its
            ``config.yaml`` except for settings that do not change the computation
            (``runtime.num_workers``, ``runtime.threads``, ``runtime.device``,
            ``runtime.compile``, ``run.out_dir``, ``run.log_every``, ``run.progress``,
            ``run.tensorboard``, ``run.plots``).

    Returns:
        A :class:`FitResult` (the same on every rank).
    """
    run = _Run(task, cfg, stage, run_dir, resume)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    finished = False
    try:
        if run.rt.threads is not None:
            torch.set_num_threads(run.rt.threads)
        if run.rt.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        result = broadcast_object(run.run())
        finished = True
        return result
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        shutdown_distributed(run.dist, wait=finished)
