"""``act3d demo``: the whole ACT pipeline on the built-in synthetic shapes, on a CPU.

Stage I (the MiniLM teacher shipped with act3d becomes a 3D autoencoder) -> Stage II (a
``tiny`` student learns the teacher's latent features by masked point modelling) ->
fine-tuning with few labels, pretrained vs scratch, and a linear SVM probe of frozen
features, pretrained vs a randomly initialised encoder. It ends with a report
(``README.md`` + PNGs) in one folder and prints its path.

Every stage runs through its public API with its ``tiny`` preset (configs/<stage>/tiny.yaml,
and configs/finetune/demo.yaml); ``--quick`` shrinks all budgets for a smoke run (tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoResult", "run_demo", "register"]

# Overrides that shrink every stage to a smoke run (seconds, not minutes).
_QUICK = {
    "pretrain-teacher": ["data.num_samples=32", "data.val_samples=16", "optim.epochs=1", "optim.warmup_epochs=0"],
    "pretrain": ["data.num_samples=32", "data.val_samples=16", "optim.epochs=1", "optim.warmup_epochs=0"],
    "finetune": [
        "data.num_samples=56", "data.val_samples=28", "optim.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0"
    ],
}


@dataclass
class DemoResult:
    """What the demo measured and where it put it.

    Attributes:
        report: the report's ``README.md``.
        metrics: the numbers in the report (see :func:`run_demo`).
        runs: stage name -> run folder.
    """

    report: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _copy_figure(src: Path, dst: Path) -> str | None:
    if not src.is_file():
        return None
    shutil.copyfile(src, dst)
    return dst.name


def run_demo(
    out_dir: str | os.PathLike[str] = "runs",
    *,
    teacher: str = "minilm",
    quick: bool = False,
    seed: int = 0,
    threads: int | None = None,
) -> DemoResult:
    """Run Stage I -> Stage II -> fine-tune (pretrained vs scratch) -> SVM probe.

    Args:
        out_dir: where the demo folder ``demo-<YYYYmmdd-HHMMSS>/`` is created.
        teacher: the Stage I teacher name (see ``act3d teachers list``).
        quick: shrink every budget to a smoke run.
        seed: seed of every stage.
        threads: torch threads (``None``: torch's default).

    Returns:
        A :class:`DemoResult`; ``report`` is the markdown report.
    """
    import torch

    from act3d.config import load_config
    from act3d.data import build_dataset
    from act3d.eval.classify import evaluate_classifier
    from act3d.eval.plots import plot_confusion, plot_tsne
    from act3d.eval.probe import extract_features, svm_probe
    from act3d.models.encoder_api import load_encoder
    from act3d.models.student import PointEncoder
    from act3d.train.finetune import FinetuneConfig, finetune, load_classifier
    from act3d.train.stage1 import Stage1Config, pretrain_teacher
    from act3d.train.stage2 import Stage2Config, pretrain

    if threads is not None:
        torch.set_num_threads(threads)
    root = Path(out_dir) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True, exist_ok=False)
    figures = root / "figures"
    figures.mkdir()
    common = [f"run.out_dir={root}", f"runtime.seed={seed}"]

    def overrides(stage: str, extra: list[str]) -> list[str]:
        return common + extra + (_QUICK[stage] if quick else [])

    tic = time.perf_counter()
    timings: dict[str, float] = {}
    runs: dict[str, str] = {}

    _say(f"Stage I: teacher '{teacher}' becomes a 3D autoencoder (preset tiny)")
    t0 = time.perf_counter()
    cfg1 = load_config(
        Stage1Config, "tiny", overrides("pretrain-teacher", [f"teacher={teacher}", "run.name=demo"]),
        stage="pretrain-teacher",
    )
    r1 = pretrain_teacher(cfg1)
    timings["stage1"] = time.perf_counter() - t0
    runs["stage1"] = str(r1.run_dir)
    first_val = _first_epoch_value(r1.run_dir, "val", "cd_l1")

    _say("Stage II: the student learns the teacher's latent features of masked patches")
    t0 = time.perf_counter()
    cfg2 = load_config(
        Stage2Config, "tiny", overrides("pretrain", [f"teacher={r1.run_dir}", "run.name=demo"]), stage="pretrain"
    )
    r2 = pretrain(cfg2)
    timings["stage2"] = time.perf_counter() - t0
    runs["stage2"] = str(r2.run_dir)
    student = Path(r2.run_dir) / "student.safetensors"

    records = {}
    for init in ("pretrained", "scratch"):
        cfg3 = load_config(
            FinetuneConfig,
            "demo",
            overrides("finetune", [f"model.init={student if init == 'pretrained' else 'scratch'}", f"run.name={init}"]),
            stage="finetune",
        )
        _say(f"fine-tuning from {init} with {100 * cfg3.data.label_fraction:.0f}% of the training labels")
        t0 = time.perf_counter()
        records[init] = finetune(cfg3)
        timings[f"finetune_{init}"] = time.perf_counter() - t0
        runs[f"finetune_{init}"] = records[init].run_dir

    _say("linear SVM probe of frozen features: pretrained student vs random init")
    t0 = time.perf_counter()
    n_points = cfg3.data.num_points
    probe_train = build_dataset(
        "synthetic", "train", n_points, train=False, seed=seed, num_samples=cfg3.data.num_samples
    )
    probe_test = build_dataset(
        "synthetic", "test", n_points, train=False, seed=seed, num_samples=cfg3.data.val_samples
    )
    pretrained_encoder = load_encoder(student)
    torch.manual_seed(seed)
    random_encoder = PointEncoder(pretrained_encoder.config).eval()
    probes = {
        "pretrained": svm_probe(pretrained_encoder, probe_train, probe_test, seed=seed),
        "random init": svm_probe(random_encoder, probe_train, probe_test, seed=seed),
    }
    timings["probe"] = time.perf_counter() - t0

    _say("pictures and report")
    shown: dict[str, str | None] = {
        "reconstruction": _copy_figure(
            Path(r1.run_dir) / "plots" / "reconstruction.png", figures / "stage1_reconstruction.png"
        ),
        "stage1_curves": _first_plot(Path(r1.run_dir), figures / "stage1_curves.png"),
        "masking": _copy_figure(Path(r2.run_dir) / "plots" / "masking.png", figures / "stage2_masking.png"),
        "stage2_curves": _first_plot(Path(r2.run_dir), figures / "stage2_curves.png"),
    }
    classifier = load_classifier(Path(records["pretrained"].run_dir) / "classifier.safetensors")
    scores = evaluate_classifier(classifier, probe_test, num_classes=classifier.num_classes)
    class_names = list(getattr(probe_test, "class_names", []) or [])
    plot_confusion(
        scores.confusion, class_names or None, figures / "confusion.png",
        title="fine-tuned from the pretrained student (last epoch)",
    )
    shown["confusion"] = "confusion.png"
    feats, labels = extract_features(pretrained_encoder, probe_test)
    plot_tsne(
        feats, figures / "tsne.png", labels=labels, class_names=class_names or None,
        title="t-SNE of frozen student features (test shapes)", seed=seed,
    )
    shown["tsne"] = "tsne.png"

    total = time.perf_counter() - tic
    metrics = {
        "stage1_val_cd_l1_first_epoch": first_val,
        "stage1_val_cd_l1_best": r1.best.get("val/cd_l1"),
        "stage2_val_loss_best": r2.best.get("val/loss"),
        "finetune": {k: v.to_dict() for k, v in records.items()},
        "probe": {k: {"accuracy": v["accuracy"], "C": v["C"]} for k, v in probes.items()},
        "timings_s": timings,
        "total_s": total,
        "quick": quick,
        "teacher": teacher,
        "label_fraction": cfg3.data.label_fraction,
    }
    (root / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")
    report = root / "README.md"
    report.write_text(_report_text(metrics, runs, shown, root), encoding="utf-8")
    _say(f"done in {total / 60:.1f} min")
    return DemoResult(report=report, metrics=metrics, runs=runs)


def _first_epoch_value(run_dir: str | os.PathLike[str], split: str, key: str) -> float | None:
    """``key`` of the first ``split`` record in a run's ``metrics.jsonl`` (None if absent)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("split") == split and key in record.get("values", {}):
            return float(record["values"][key])
    return None


def _first_plot(run_dir: Path, dst: Path) -> str | None:
    """Copy the run's loss-curve PNG (the engine writes ``plots/*.png``)."""
    for name in ("curves.png", "loss.png"):
        if (run_dir / "plots" / name).is_file():
            return _copy_figure(run_dir / "plots" / name, dst)
    found = sorted(p for p in (run_dir / "plots").glob("*.png") if "reconstruction" not in p.name and "masking" not in p.name)
    return _copy_figure(found[0], dst) if found else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _report_text(metrics: dict[str, Any], runs: dict[str, str], shown: dict[str, str | None], root: Path) -> str:
    ft = metrics["finetune"]
    t = metrics["timings_s"]
    lines = [
        "# act3d demo",
        "",
        f"ACT on the built-in synthetic shapes, teacher `{metrics['teacher']}`"
        + (" (quick smoke run: budgets shrunk)" if metrics["quick"] else "")
        + f". Total {metrics['total_s'] / 60:.1f} min. One seed: treat differences of a few points as noise.",
        "",
        "## Stage I — cross-modal autoencoder",
        "",
        f"Validation CD-L1 (fine points): {_num(metrics['stage1_val_cd_l1_first_epoch'])} after the first epoch, "
        f"{_num(metrics['stage1_val_cd_l1_best'])} at the best epoch ({t['stage1']:.0f} s).",
        "",
        "## Stage II — masked point modelling",
        "",
        f"Best validation loss (negative cosine to the teacher's latents): "
        f"{_num(metrics['stage2_val_loss_best'])} ({t['stage2']:.0f} s).",
        "",
        "## Downstream — does pretraining help?",
        "",
        f"Fine-tuning (full) with {100 * metrics['label_fraction']:.0f}% of the training labels, same budget:",
        "",
        "| init | last-epoch acc | best-epoch acc | best epoch | time |",
        "|---|---|---|---|---|",
    ]
    for name in ("pretrained", "scratch"):
        r = ft[name]
        lines.append(
            f"| {name} | {_pct(r['last_acc'])} | {_pct(r['best_acc'])} | {r['best_epoch']} | {r['seconds']:.0f} s |"
        )
    lines += [
        "",
        f"Best epoch selected on: {ft['pretrained']['selection']}.",
        "",
        "Linear SVM on frozen features (test accuracy):",
        "",
        "| encoder | accuracy | C |",
        "|---|---|---|",
    ]
    for name, p in metrics["probe"].items():
        lines.append(f"| {name} | {_pct(p['accuracy'])} | {p['C']} |")
    lines += ["", "## Pictures", ""]
    captions = {
        "reconstruction": "Stage I: input vs reconstruction",
        "stage1_curves": "Stage I: training curves",
        "masking": "Stage II: visible vs masked patches",
        "stage2_curves": "Stage II: training curves",
        "confusion": "Fine-tuned classifier: confusion matrix (test)",
        "tsne": "Frozen student features: t-SNE by class (test)",
    }
    for key, caption in captions.items():
        if shown.get(key):
            lines += [f"### {caption}", "", f"![{caption}](figures/{shown[key]})", ""]
    lines += ["## Runs", ""]
    lines += [f"- {name}: `{os.path.relpath(path, root)}`" for name, path in runs.items()]
    command = "act3d demo --quick" if metrics["quick"] else "act3d demo"
    lines += ["", f"Numbers: `metrics.json`. Reproduce: `{command}`."]
    return "\n".join(lines) + "\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``act3d demo`` to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on synthetic shapes (minutes on 2 CPU cores), ending with a report",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default="runs", help="parent folder of the demo folder (default: runs)")
    parser.add_argument("--teacher", default="minilm", help="Stage I teacher (default: minilm)")
    parser.add_argument("--quick", action="store_true", help="shrink every budget to a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    result = run_demo(args.out, teacher=args.teacher, quick=args.quick, seed=args.seed, threads=args.threads)
    print(f"report: {result.report}")
    return 0
