"""Does ACT's cross-modal teacher help? The paper's comparison, at CPU scale, with seeds.

Five ways to get a student backbone, each given the same budget, each scored the same way:

=====================  ==================================================================
``scratch``            no pre-training (random init)
``points``             Stage II with the Point-MAE target (``act3d pretrain --target
                       points``: masked patches' points, CD-L2), no teacher
``act-random``         ACT: Stage I around a randomly initialised MiniLM-shaped
                       Transformer (``random:minilm``, the paper's ablation), then Stage II
``act-minilm``         ACT with the pretrained MiniLM teacher (language, ``minilm``)
``act-dinov2``         ACT with the pretrained DINOv2 ViT-S/14 teacher (images,
                       ``dinov2-s``; built by ``act3d teachers build-dinov2``; skipped with a
                       note when it is not built)
=====================  ==================================================================

Equal budgets: every Stage I run (the three ACT teachers) has the same data, epochs and
batch; every Stage II run (``points`` and the three ACT students) the same. (The ACT rows
also spent a Stage I run; the table's time column shows what each row cost in all.)

Scores of each backbone (the downstream settings are the same for every row):

- full fine-tuning with 10% and with 100% of the training labels (``act3d finetune``;
  stratified label subset drawn from the seed); the **last-epoch** test accuracy is the
  number in the table (the best epoch is chosen on the test split, optimistic; it is in
  the JSON);
- the linear SVM probe of frozen features (``act3d probe``; C by 3-fold CV on train);
- 5-way 10-shot (``act3d fewshot``: folds drawn from the labelled source with the seed,
  full fine-tuning per fold, last-epoch accuracy).

Seeds (``--seeds``, default 0,1,2): each seed fine-tunes / draws folds with that seed; the
table shows mean ± sample std over seeds (few-shot: over all folds of all seeds). By
default pre-training runs once (with the first seed) and every seed starts from it, so the
std shows the downstream variance only and the probe of a pre-trained backbone has no
spread; ``--pretrain-per-seed`` re-runs the whole chain (Stage I, Stage II) per seed,
which is the stronger evidence and costs about ``len(seeds)`` times the pre-training.

Data: the synthetic shape world by default (pre-training on its unlabeled ``pretrain``
split, scoring on its labelled train/test splits); ``--pretrain-data shapenet:DIR`` and
``--eval-data h5:PATH`` (or any SOURCE of ``act3d.data.build_dataset``) use data on disk.

Presets (``--preset``): ``tiny`` (the ``tiny`` models: 256 points in 16 patches of 16, a
128-d 4-block student, shortened pre-training; tens of CPU-minutes), ``small`` (the packaged
``small`` Stage I / Stage II presets as they are: a 256-d 6-block student on the same
grouping, longer pre-training; sized for about two hours on a 2-core CPU), ``--quick`` (a
smoke run of the tiny chain with minimal budgets). Everything runs through the stages' Python APIs
(``pretrain_teacher``, ``pretrain``, ``finetune``, ``svm_probe``, ``run_fewshot``); every
run is an ordinary act3d run folder under ``--out``. Re-running with the same ``--out``
reuses finished runs (their ``teacher.safetensors`` / ``student.safetensors`` /
``result.json``).

    python benchmarks/replicate.py --preset tiny|small [--quick] [--seeds 0,1,2]
        [--pretrain-per-seed] [--pretrain-data SOURCE] [--eval-data SOURCE]
        [--threads N] [--out DIR]

Writes ``<out>/replicate.md`` (the table, the command, the wall time, the machine) and
``<out>/replicate.json`` (every number).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

METHODS = ("scratch", "points", "act-random", "act-minilm", "act-dinov2")
TEACHERS = {"act-random": "random:minilm", "act-minilm": "minilm", "act-dinov2": "dinov2-s"}
LABELS = {
    "scratch": "scratch (no pre-training)",
    "points": "Point-MAE target (`--target points`)",
    "act-random": "ACT, random-init teacher (`random:minilm`)",
    "act-minilm": "ACT, MiniLM teacher (`minilm`)",
    "act-dinov2": "ACT, DINOv2-S teacher (`dinov2-s`)",
}
WAY, SHOT = 5, 10


# ----------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """What one preset runs: a packaged preset per stage plus ``--set``-style overrides.

    Attributes:
        size: the encoder size (``tiny``/``small``), used for the scratch backbone.
        stage1_preset / stage2_preset / finetune_preset: packaged preset names (or None:
            the stage's defaults).
        stage1 / stage2 / finetune: overrides applied on top (``a.b=value``).
        finetune10: extra overrides of the 10%-label runs (a tenth of the shapes needs more
            epochs and a smaller batch to get any optimiser steps at all).
        fewshot: overrides of the fine-tuning config for few-shot folds.
        fewshot_folds: folds per seed.
        fewshot_test: test shapes per class of a fold.
        probe_train / probe_test: caps of a synthetic source's train/test splits for the
            probe (the fine-tuning caps by default).
    """

    size: str
    stage1_preset: str | None
    stage1: tuple[str, ...]
    stage2_preset: str
    stage2: tuple[str, ...]
    finetune_preset: str
    finetune: tuple[str, ...]
    finetune10: tuple[str, ...]
    fewshot: tuple[str, ...]
    fewshot_folds: int
    fewshot_test: int = 20
    notes: tuple[str, ...] = field(default_factory=tuple)


# The synthetic world has 14 classes: train/test caps below are multiples of 14 (balanced).
_TINY_STAGE1 = ("data.train_split=pretrain", "data.num_samples=256", "data.val_samples=32", "optim.warmup_epochs=1", "optim.epochs=4")
_TINY_STAGE2 = ("data.num_samples=512", "data.val_samples=32", "optim.warmup_epochs=1", "optim.epochs=4")
_TINY_FINETUNE = (
    "data.num_samples=420", "data.val_samples=280", "optim.warmup_epochs=1", "optim.epochs=8",
    "run.val_every=8",
)  # fmt: skip
# 10% of 420 = 42 shapes: batch 16 and 5x the epochs -> 80 optimiser steps (100%: 104)
_FINETUNE10 = ("optim.batch_size=16", "optim.warmup_epochs=4", "optim.epochs=40", "run.val_every=40")
# 5-way 10-shot = 50 shapes: batch 16, 30 epochs -> 90 optimiser steps
_FEWSHOT = ("optim.warmup_epochs=3", "optim.epochs=30", "optim.batch_size=16", "run.val_every=30")

BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        size="tiny",
        stage1_preset="tiny",
        stage1=_TINY_STAGE1,
        stage2_preset="tiny",
        stage2=_TINY_STAGE2,
        finetune_preset="synthetic",
        finetune=_TINY_FINETUNE,
        finetune10=_FINETUNE10,
        fewshot=_FEWSHOT,
        fewshot_folds=1,
    ),
    "small": Budget(
        size="small",
        # the packaged `small` presets as they are (Stage I: 640 shapes x 10 epochs of batch 8;
        # Stage II: 2048 shapes x 8 epochs of batch 32; 256 points in 16 patches of 16), Stage I
        # on the unlabeled pool like Stage II; scoring as `tiny` with the `small` student
        stage1_preset="small",
        stage1=("data.train_split=pretrain",),
        stage2_preset="small",
        stage2=(),
        finetune_preset="synthetic",
        finetune=_TINY_FINETUNE + ("model.encoder=small",),
        finetune10=_FINETUNE10,
        fewshot=_FEWSHOT,
        fewshot_folds=1,
    ),
}
QUICK = Budget(
    size="tiny",
    stage1_preset="tiny",
    stage1=("data.train_split=pretrain", "data.num_samples=64", "data.val_samples=16", "optim.warmup_epochs=1", "optim.epochs=2"),
    stage2_preset="tiny",
    stage2=("data.num_samples=64", "data.val_samples=16", "optim.warmup_epochs=1", "optim.epochs=2"),
    finetune_preset="synthetic",
    finetune=("data.num_samples=140", "data.val_samples=140", "optim.warmup_epochs=1", "optim.epochs=2",
              "optim.batch_size=8", "run.val_every=1"),
    finetune10=(),
    fewshot=("optim.warmup_epochs=1", "optim.epochs=2", "optim.batch_size=16", "run.val_every=1"),
    fewshot_folds=1,
    fewshot_test=10,
    notes=("--quick: a smoke run of the whole chain; its numbers say nothing about the methods.",),
)


def _tag(method: str, init: Path | None) -> str:
    """Name of a backbone in scoring run folders: the method, plus the pre-training run's
    seed (``stage2-<method>-seed<s>/student.safetensors`` -> ``<method>-pre<s>``)."""
    if init is None:
        return method
    return f"{method}-pre{init.parent.name.rsplit('-seed', 1)[-1]}"


# ----------------------------------------------------------------------------- running


class Runner:
    """Runs (or reuses) every piece of the comparison under one output folder."""

    def __init__(self, args: argparse.Namespace, budget: Budget) -> None:
        self.args = args
        self.budget = budget
        self.out = Path(args.out)
        self.runs = self.out / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.common = [f"runtime.threads={args.threads}"] if args.threads else []
        self.common += ["run.progress=off", "run.tensorboard=false", "run.plots=false", f"run.out_dir={self.runs}"]
        self.timings: dict[str, float] = {}

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", file=sys.stderr, flush=True)

    def _timed(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    @staticmethod
    def _fresh(run_dir: Path) -> None:
        """An interrupted run (no final file) starts again from nothing."""
        if run_dir.exists():
            shutil.rmtree(run_dir)

    # -- pre-training ---------------------------------------------------------

    def stage1(self, teacher: str, seed: int) -> tuple[Path, dict[str, Any]]:
        from act3d.config import load_config
        from act3d.train.stage1 import Stage1Config, pretrain_teacher

        run_dir = self.runs / f"stage1-{teacher.replace(':', '_')}-seed{seed}"
        final = run_dir / "teacher.safetensors"
        info_file = run_dir / "replicate.json"
        if final.is_file() and info_file.is_file():
            self.log(f"Stage I {teacher} seed {seed}: reusing {final}")
            return final, json.loads(info_file.read_text())
        self._fresh(run_dir)
        overrides = list(self.budget.stage1) + self.common + [f"teacher={teacher}", f"runtime.seed={seed}"]
        if self.args.pretrain_data:
            overrides.append(f"data.source={self.args.pretrain_data}")
        cfg = load_config(Stage1Config, self.budget.stage1_preset, overrides, stage="pretrain-teacher")
        self.log(f"Stage I {teacher} seed {seed}: {cfg.data.num_samples} clouds x {cfg.optim.epochs} epochs")
        tic = time.perf_counter()
        result = pretrain_teacher(cfg, run_dir=run_dir)
        info = {"seconds": time.perf_counter() - tic, "val_cd_l1": result.best.get("val/cd_l1"),
                "last_val_cd_l1": result.last.get("val/cd_l1"), "run_dir": str(run_dir)}  # fmt: skip
        info_file.write_text(json.dumps(info, indent=2) + "\n")
        self.log(f"Stage I {teacher} seed {seed}: val CD-L1 {info['val_cd_l1']} in {info['seconds']:.0f} s")
        return final, info

    def stage2(self, name: str, teacher_file: Path | None, seed: int) -> tuple[Path, dict[str, Any]]:
        from act3d.config import load_config
        from act3d.train.stage2 import Stage2Config, pretrain

        run_dir = self.runs / f"stage2-{name}-seed{seed}"
        final = run_dir / "student.safetensors"
        info_file = run_dir / "replicate.json"
        if final.is_file() and info_file.is_file():
            self.log(f"Stage II {name} seed {seed}: reusing {final}")
            return final, json.loads(info_file.read_text())
        self._fresh(run_dir)
        overrides = list(self.budget.stage2) + self.common + [f"runtime.seed={seed}"]
        if teacher_file is None:
            overrides.append("target=points")
        else:
            overrides += [f"teacher={teacher_file}", "target=clean"]
        if self.args.pretrain_data:
            overrides.append(f"data.source={self.args.pretrain_data}")
        cfg = load_config(Stage2Config, self.budget.stage2_preset, overrides, stage="pretrain")
        self.log(f"Stage II {name} seed {seed}: {cfg.data.num_samples} clouds x {cfg.optim.epochs} epochs")
        tic = time.perf_counter()
        result = pretrain(cfg, run_dir=run_dir)
        info = {"seconds": time.perf_counter() - tic, "last_val_loss": result.last.get("val/loss"),
                "run_dir": str(run_dir)}  # fmt: skip
        info_file.write_text(json.dumps(info, indent=2) + "\n")
        self.log(f"Stage II {name} seed {seed}: val loss {info['last_val_loss']} in {info['seconds']:.0f} s")
        return final, info

    def pretrained(self, method: str, seed: int) -> tuple[Path | None, dict[str, Any]]:
        """The backbone file of ``method`` pre-trained with ``seed`` (None for scratch)."""
        if method == "scratch":
            return None, {"seconds": 0.0}
        info: dict[str, Any] = {}
        teacher_file = None
        if method in TEACHERS:
            teacher_file, info["stage1"] = self.stage1(TEACHERS[method], seed)
        student, info["stage2"] = self.stage2(method, teacher_file, seed)
        info["seconds"] = sum(part["seconds"] for part in (info.get("stage1"), info["stage2"]) if part)
        return student, info

    # -- scoring --------------------------------------------------------------

    def _finetune_cfg(self, init: Path | None, seed: int, extra: Sequence[str] = ()) -> Any:
        from act3d.config import load_config
        from act3d.train.finetune import FinetuneConfig

        overrides = list(self.budget.finetune) + self.common + [
            f"model.init={init if init is not None else 'scratch'}", f"model.encoder={self.budget.size}",
            f"runtime.seed={seed}", *extra,
        ]  # fmt: skip
        if self.args.eval_data:
            overrides.append(f"data.source={self.args.eval_data}")
        return load_config(FinetuneConfig, self.budget.finetune_preset, overrides, stage="finetune")

    def finetune(self, method: str, init: Path | None, seed: int, fraction: float) -> dict[str, Any]:
        from act3d.train.finetune import RunRecord, finetune

        run_dir = self.runs / f"finetune-{_tag(method, init)}-labels{fraction:g}-seed{seed}"
        result_file = run_dir / "result.json"
        if result_file.is_file():
            return RunRecord(**json.loads(result_file.read_text())).to_dict()
        self._fresh(run_dir)
        extra = [f"data.label_fraction={fraction}"] + (list(self.budget.finetune10) if fraction < 1 else [])
        cfg = self._finetune_cfg(init, seed, extra)
        record = finetune(cfg, run_dir=run_dir)
        self.log(f"fine-tune {method} labels {fraction:g} seed {seed}: last {100 * record.last_acc:.1f}%, "
                 f"best {100 * record.best_acc:.1f}% ({record.train_size} shapes, {record.seconds:.0f} s)")
        return record.to_dict()

    def probe(self, method: str, init: Path | None, seed: int) -> dict[str, Any]:
        import torch

        from act3d.data import build_dataset, is_synthetic
        from act3d.eval.probe import svm_probe
        from act3d.models.encoder_api import load_encoder
        from act3d.models.student import EncoderConfig, PointEncoder

        out_file = self.runs / f"probe-{_tag(method, init)}-seed{seed}.json"
        if out_file.is_file():
            return json.loads(out_file.read_text())
        cfg = self._finetune_cfg(init, seed)
        d, m = cfg.data, cfg.model
        if self.args.threads:
            torch.set_num_threads(self.args.threads)
        if init is None:
            torch.manual_seed(seed)
            encoder = PointEncoder(EncoderConfig.preset(m.encoder, num_groups=m.num_groups, group_size=m.group_size))
        else:
            encoder = load_encoder(init)
        synthetic = is_synthetic(d.source)
        sets = {
            split: build_dataset(d.source, split, d.num_points, root=d.root, train=False, sampling="fps",
                                 num_samples=cap if synthetic else None)
            for split, cap in (("train", d.num_samples), (d.val_split or "test", d.val_samples))
        }  # fmt: skip
        tic = time.perf_counter()
        train_set, test_set = sets.values()
        result = svm_probe(encoder.eval(), train_set, test_set, seed=seed)
        result["seconds"] = time.perf_counter() - tic
        out_file.write_text(json.dumps(result, indent=2) + "\n")
        self.log(f"probe {method} seed {seed}: {100 * result['accuracy']:.1f}% (C={result['C']:g})")
        return result

    def fewshot(self, method: str, init: Path | None, seed: int) -> dict[str, Any]:
        from act3d.eval.fewshot import run_fewshot

        group = self.runs / f"fewshot-{_tag(method, init)}-{WAY}w{SHOT}s-seed{seed}"
        summary_file = group / "summary.json"
        if summary_file.is_file():
            return json.loads(summary_file.read_text())
        cfg = self._finetune_cfg(init, seed, list(self.budget.fewshot) + ["data.label_fraction=1.0"])
        summary = run_fewshot(
            cfg, WAY, SHOT, folds=self.budget.fewshot_folds, num_test=self.budget.fewshot_test,
            fold_seed=seed, group_dir=group,
        )  # fmt: skip
        values = summary.stats["last_acc"]["values"]
        self.log(f"{WAY}-way {SHOT}-shot {method} seed {seed}: last "
                 f"{100 * statistics.fmean(values):.1f}% over {len(values)} fold(s)")
        return summary.to_dict()


def _available_methods(requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    from act3d.models.teachers import available_teachers

    status = {name: (ok, why) for name, ok, why in available_teachers()}
    methods, skipped = [], {}
    for method in requested:
        teacher = TEACHERS.get(method)
        if teacher is not None and not status.get(teacher, (False, "unknown teacher"))[0]:
            skipped[method] = f"teacher `{teacher}` unavailable: {status.get(teacher, (False, 'unknown'))[1]}"
            continue
        methods.append(method)
    return methods, skipped


# ----------------------------------------------------------------------------- report


def _stat(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def _pct(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{100 * stat['mean']:.1f}"
    if stat["std"] is not None:
        text += f" ± {100 * stat['std']:.1f}"
    return text


def summarise(per_method: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for method, runs in per_method.items():
        row: dict[str, Any] = {}
        for key in ("ft10", "ft100"):
            row[f"{key}_last"] = _stat([r["last_acc"] for r in runs[key]])
            row[f"{key}_best"] = _stat([r["best_acc"] for r in runs[key]])
        row["probe"] = _stat([r["accuracy"] for r in runs["probe"]])
        row["fewshot_last"] = _stat([v for r in runs["fewshot"] for v in r["stats"]["last_acc"]["values"]])
        row["fewshot_best"] = _stat([v for r in runs["fewshot"] for v in r["stats"]["best_acc"]["values"]])
        row["pretrain_seconds"] = runs["pretrain_seconds"]
        row["seconds"] = runs["seconds"]
        table[method] = row
    return table


def render(args: argparse.Namespace, budget: Budget, table: dict[str, dict[str, Any]], skipped: dict[str, str],
           pretrain: dict[str, list[dict[str, Any]]], seconds: float) -> str:
    import torch

    seeds = args.seeds
    eval_source = args.eval_data or "synthetic"
    lines = [f"### ACT vs baselines, preset `{args.preset}`{' (--quick)' if args.quick else ''}", ""]
    lines += _common.machine_lines(args.threads or torch.get_num_threads())
    lines += [
        f"- command: `{_common.command_line()}`",
        f"- wall time of this invocation: {seconds / 60:.1f} min; sum of the recorded run times: "
        f"{sum(row['seconds'] for row in table.values()) / 60:.1f} min",
        f"- pre-training data: {args.pretrain_data or 'synthetic (unlabeled pretrain split)'}; "
        f"scoring data: {eval_source}",
        f"- seeds {', '.join(map(str, seeds))}; pre-training "
        + ("per seed (the whole chain is repeated)" if args.pretrain_per_seed
           else f"once (seed {seeds[0]}), shared by every seed"),
        "",
        "Accuracy in %, mean ± sample std over seeds (few-shot: over all folds of all seeds); "
        "fine-tuning and few-shot show the **last epoch** (the best-epoch numbers, selected on "
        "the test split, are in the JSON). Time = recorded wall time of the row's pre-training and "
        "of all its scoring runs, in minutes.",
        "",
    ]
    header = ["backbone", "fine-tune 10% labels", "fine-tune 100% labels", "SVM probe",
              f"{WAY}-way {SHOT}-shot", "pre-train min", "total min"]
    rows = []
    for method, row in table.items():
        rows.append([LABELS[method], _pct(row["ft10_last"]), _pct(row["ft100_last"]), _pct(row["probe"]),
                     _pct(row["fewshot_last"]), f"{row['pretrain_seconds'] / 60:.1f}", f"{row['seconds'] / 60:.1f}"])
    lines += [_common.markdown_table(header, rows), ""]
    for method, why in skipped.items():
        lines.append(f"- `{method}` skipped: {why}")
    for note in budget.notes:
        lines.append(f"- {note}")
    if not args.pretrain_per_seed:
        lines.append("- One pre-training per row: the spread of a pre-trained row is the downstream "
                     "one (label subset, fine-tuning seed; for the probe only the SVM's CV split and "
                     "solver seed). The spread across pre-training seeds needs `--pretrain-per-seed`.")
    lines += ["", "Pre-training runs (Stage I: best validation CD-L1 of the whole reconstructed cloud; "
              "Stage II: last validation loss; the two targets' losses are not comparable):", ""]
    header = ["backbone", "seed", "Stage I val CD-L1", "Stage II val loss", "Stage I s", "Stage II s"]
    rows = []
    for method, infos in pretrain.items():
        for seed, info in infos:
            s1, s2 = info.get("stage1"), info.get("stage2")
            rows.append([method, seed, f"{s1['val_cd_l1']:.4f}" if s1 and s1.get("val_cd_l1") is not None else "–",
                         f"{s2['last_val_loss']:.4f}" if s2 and s2.get("last_val_loss") is not None else "–",
                         f"{s1['seconds']:.0f}" if s1 else "–", f"{s2['seconds']:.0f}" if s2 else "–"])
    lines += [_common.markdown_table(header, rows), ""]
    lines += ["Budgets (overrides on the packaged presets, `--set` syntax):", ""]
    lines.append(f"- Stage I (preset `{budget.stage1_preset or 'defaults'}`): {' '.join(budget.stage1)}")
    lines.append(f"- Stage II (preset `{budget.stage2_preset}`): {' '.join(budget.stage2)}")
    lines.append(f"- fine-tuning (preset `{budget.finetune_preset}`): {' '.join(budget.finetune)}; "
                 f"10% labels also {' '.join(budget.finetune10) or '(nothing)'}")
    lines.append(f"- few-shot: fine-tuning settings plus {' '.join(budget.fewshot)}; {budget.fewshot_folds} "
                 f"fold(s) per seed, {budget.fewshot_test} test shapes per class")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise SystemExit(f"--seeds must be comma-separated integers, got {text!r}") from err
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(BUDGETS), default="tiny")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models, minimal budgets")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma list (default 0,1,2)")
    parser.add_argument("--pretrain-per-seed", action="store_true",
                        help="repeat the pre-training for every seed (default: once, shared)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--pretrain-data", default=None, metavar="SOURCE",
                        help="pre-training SOURCE, e.g. shapenet:DIR (default: synthetic)")
    parser.add_argument("--eval-data", default=None, metavar="SOURCE",
                        help="labelled SOURCE for fine-tuning, probe and few-shot, e.g. h5:PATH "
                        "(default: synthetic)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: torch's; on a busy machine 1 is faster)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default runs/replicate-<preset>-<time>); reused runs are kept")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise SystemExit(f"--methods: unknown {unknown}; valid choices: {', '.join(METHODS)}")
    budget = QUICK if args.quick else BUDGETS[args.preset]
    if args.quick:
        args.preset = "tiny"
    if args.out is None:
        tag = "quick" if args.quick else args.preset
        args.out = os.path.join("runs", f"replicate-{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.threads:
        _common.set_threads(args.threads)
    methods, skipped = _available_methods(methods)
    runner = Runner(args, budget)
    tic = time.perf_counter()
    runner.log(f"replicate: methods {methods}, seeds {args.seeds}, output {args.out}")
    per_method: dict[str, dict[str, Any]] = {}
    pretrain_infos: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for method in methods:
        start = time.perf_counter()
        runs: dict[str, Any] = {"ft10": [], "ft100": [], "probe": [], "fewshot": [], "pretrain_seconds": 0.0}
        pretrain_infos[method] = []
        shared: tuple[Path | None, dict[str, Any]] | None = None
        for seed in args.seeds:
            if args.pretrain_per_seed or shared is None:
                init, info = runner.pretrained(method, seed)
                runs["pretrain_seconds"] += info["seconds"]
                if method != "scratch":
                    pretrain_infos[method].append((seed, info))
                shared = (init, info)
            init = shared[0]
            runs["ft10"].append(runner.finetune(method, init, seed, 0.1))
            runs["ft100"].append(runner.finetune(method, init, seed, 1.0))
            runs["probe"].append(runner.probe(method, init, seed))
            runs["fewshot"].append(runner.fewshot(method, init, seed))
        # the recorded time of every run of the row (reused runs count what they cost then)
        runs["seconds"] = runs["pretrain_seconds"] + sum(
            r["seconds"] for key in ("ft10", "ft100", "probe") for r in runs[key]
        ) + sum(r["seconds"] for f in runs["fewshot"] for r in f["runs"])
        per_method[method] = runs
        runner.log(f"{method}: done ({time.perf_counter() - start:.0f} s in this invocation)")
    table = summarise(per_method)
    seconds = time.perf_counter() - tic
    text = render(args, budget, table, skipped, pretrain_infos, seconds)
    out = Path(args.out)
    (out / "replicate.md").write_text(text, encoding="utf-8")
    payload = {
        "command": _common.command_line(),
        "seconds": seconds,
        "args": {k: v for k, v in vars(args).items()},
        "budget": dataclasses.asdict(budget),
        "skipped": skipped,
        "table": table,
        "runs": per_method,
        "pretraining": {m: [{"seed": s, **i} for s, i in infos] for m, infos in pretrain_infos.items()},
    }
    (out / "replicate.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {out / 'replicate.md'} and {out / 'replicate.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
