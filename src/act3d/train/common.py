"""Pieces every training stage shares, so the stages do not grow their own copies."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

    from act3d.models.student import EncoderConfig

__all__ = [
    "DataConfig", "build_pretraining_split", "init_backbone", "parse_seeds", "resumed_seeds",
    "run_seed_group", "write_group_summary",
]  # fmt: skip

R = TypeVar("R")


@dataclass
class DataConfig:
    """Which data a stage reads and how much of it.

    ``source`` is a SOURCE string of :func:`act3d.data.build_dataset` (``synthetic``,
    ``shapenet:DIR``, ``scanobjectnn:PB_T50_RS``, ``h5:PATH``, ...); ``root`` overrides the
    data set's default folder. ``num_samples`` / ``val_samples`` cap the train / validation
    sets (for synthetic sources: how many shapes are generated). ``label_fraction`` keeps that
    share of the labelled training samples, stratified by class and seeded (low-label studies).
    """

    source: str = "synthetic"
    root: str | None = None
    num_points: int = 1024
    train_split: str = "train"
    val_split: str | None = "test"
    num_samples: int | None = None
    val_samples: int | None = None
    label_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.num_points <= 0:
            raise ValueError(f"data.num_points must be positive, got {self.num_points}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"data.label_fraction must be in (0, 1], got {self.label_fraction}")
        for key in ("num_samples", "val_samples"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"data.{key} must be positive or null, got {value}")


def build_pretraining_split(data: DataConfig, split: str, train: bool, limit: int | None, seed: int) -> Any:
    """One split for self-supervised pretraining (Stages I and II): random point subsets
    (not FPS, ACT_SPEC §1), normalised, at most ``limit`` samples (synthetic sources generate
    exactly that many shapes; others keep their first ``limit``).

    Returns:
        A torch ``Dataset`` of ``{"points": (N, 3), "label": ()}`` samples.
    """
    from torch.utils.data import Subset

    from act3d.data import build_dataset, is_synthetic

    synthetic = is_synthetic(data.source)
    dataset = build_dataset(
        data.source,
        split,
        data.num_points,
        root=data.root,
        train=train,
        sampling="random",
        normalize=True,
        seed=seed,
        num_samples=limit if synthetic else None,
    )
    if not synthetic and limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return dataset


def init_backbone(
    init: str, encoder: str, *, num_groups: int, group_size: int, drop_path: float
) -> tuple[EncoderConfig, dict[str, Tensor] | None, str]:
    """The backbone a downstream model starts from: its size and its initial weights.

    Args:
        init: ``"scratch"``, or a student / classifier ``.safetensors`` or a run folder
            holding one (read by :func:`act3d.train.finetune.load_init_backbone`).
        encoder: size preset used from scratch (a checkpoint brings its own size).
        num_groups, group_size, drop_path: the grouping and stochastic depth of this
            stage's config, which replace the checkpoint's.

    Returns:
        ``(EncoderConfig, backbone state dict or None for scratch, where it came from)``.
    """
    from act3d.models.student import EncoderConfig
    from act3d.train.finetune import load_init_backbone

    overrides = {"num_groups": num_groups, "group_size": group_size, "drop_path": drop_path}
    if init == "scratch":
        return EncoderConfig.preset(encoder, **overrides), None, "scratch"
    config, state, path = load_init_backbone(init)
    return dataclasses.replace(config, **overrides), state, str(path)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` (the ``--seeds`` option) -> ``[0, 1, 2]``; a clear error naming the option."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise ValueError(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from err
    if not seeds:
        raise ValueError(f"--seeds must name at least one seed, got {text!r}")
    return seeds


def run_seed_group(
    cfg: Any,
    seeds: Sequence[int],
    *,
    stage: str,
    train: Callable[..., R | None],
    load_record: Callable[[dict[str, Any]], R],
    on_record: Callable[[Path, list[R]], None],
    group_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> tuple[Path, list[R]]:
    """Run one training per seed in ``<group>/seed-<s>/``; the loop ``--seeds`` shares.

    Args:
        cfg: the base config (``runtime.seed`` is replaced per run); saved as
            ``<group>/config.yaml``.
        seeds: distinct seeds.
        stage: names a new group folder ``<run.out_dir>/<stage>-<run.name>-<time>``.
        train: ``train(run_cfg, run_dir=DIR)`` or ``train(run_cfg, resume=DIR)`` -> the run's
            record, or ``None`` on a non-zero rank under torchrun.
        load_record: rebuilds a record from a finished run's ``result.json``.
        on_record: called with the group and the records so far after each new run (writes
            the summary, so an interrupted group still has one).
        group_dir / resume: the group folder to use, or one to continue: finished seeds (with
            ``result.json``) are kept, interrupted ones resume from their last checkpoint,
            missing ones start.

    Returns:
        The group folder and the records, in seed order.
    """
    from act3d.checkpoint import atomic_path
    from act3d.config import save_config
    from act3d.train.engine import new_run_dir

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be a non-empty list of distinct ints, got {seeds}")
    if resume is not None and group_dir is not None:
        raise ValueError("give group_dir or resume, not both")
    if resume is not None:
        group = Path(resume)
        if not (group / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: no config.yaml in {group}")
    else:
        group = Path(group_dir) if group_dir is not None else new_run_dir(cfg.run.out_dir, stage, cfg.run.name)
        group.mkdir(parents=True, exist_ok=True)
        save_config(cfg, group / "config.yaml")
    with atomic_path(group / "seeds.json") as tmp:
        tmp.write_text(json.dumps(seeds) + "\n", encoding="utf-8")
    records: list[R] = []
    for seed in seeds:
        run_cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, seed=seed))
        seed_dir = group / f"seed-{seed}"
        result_file = seed_dir / "result.json"
        if result_file.is_file():
            records.append(load_record(json.loads(result_file.read_text(encoding="utf-8"))))
            continue
        if (seed_dir / "checkpoints" / "last.pt").is_file():
            record = train(run_cfg, resume=seed_dir)
        else:
            record = train(run_cfg, run_dir=seed_dir)
        if record is None:
            continue
        records.append(record)
        on_record(group, records)
    return group, records


def resumed_seeds(path: str | os.PathLike[str], what: str) -> list[int] | None:
    """What ``--resume PATH`` continues: a seeds group of :func:`run_seed_group` (returns the
    seeds saved in its ``seeds.json``) or a single run (``checkpoints/last.pt``; returns None).

    Raises:
        FileNotFoundError: neither, naming ``--resume`` and ``what`` the group would be of.
    """
    path = Path(path)
    if (path / "seeds.json").is_file():
        return [int(s) for s in json.loads((path / "seeds.json").read_text(encoding="utf-8"))]
    if (path / "checkpoints" / "last.pt").is_file():
        return None
    raise FileNotFoundError(f"--resume {path}: neither a {what} group (seeds.json) nor a run (checkpoints/last.pt)")


def write_group_summary(group_dir: Path, summary: dict[str, Any], markdown: str) -> None:
    """Write a seeds group's ``summary.json`` and ``summary.md``, each atomically."""
    from act3d.checkpoint import atomic_path

    with atomic_path(group_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with atomic_path(group_dir / "summary.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
