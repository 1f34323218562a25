"""Compare the Stage II targets on one budget, scored by a linear SVM probe.

Every target (``reference``, ``clean``, ``transformer``, ``points``) pre-trains the same
student from the same seed, on the same data and schedule, with the same Stage I teacher;
each exported ``student.safetensors`` is then scored by :func:`act3d.eval.probe.svm_probe`
(the implementation behind ``act3d probe``: frozen [cls ‖ max] features of test-mode FPS
points, standardised, LinearSVC with C chosen by 3-fold CV on the training split) on a
labelled source's train/test splits. A randomly initialised student of the same size is
probed too, as the floor. ``--target-stats`` also reports, per teacher target, how close the
targets are to a constant: the mean cosine between each masked-patch target and the mean
target of the batch (what predicting one fixed vector would score).

Usage::

    act3d pretrain-teacher --config tiny --out runs/bench     # once; prints RUN_DIR
    python benchmarks/stage2_targets.py --teacher RUN_DIR --out runs/bench/stage2 \\
        [--preset tiny] [--set optim.epochs=8 ...] [--seeds 0 1] [--probe-data synthetic-scan]
    # score the students of an earlier call on another labelled source, no training:
    python benchmarks/stage2_targets.py --teacher RUN_DIR --out DIR --reprobe DIR/results.json \\
        --probe-data synthetic-scan --target-stats

Writes ``<out>/results.json`` (or ``<out>/reprobe-<source>.json``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from act3d.config import load_config
from act3d.data import build_dataset
from act3d.eval.probe import svm_probe
from act3d.models.encoder_api import load_encoder
from act3d.models.student import PointEncoder
from act3d.train.stage2 import TARGETS, Stage2Config, Stage2Task, pretrain

_SCRATCH = "none (random init)"


def _fmt(values: list[float], digits: int = 1) -> str:
    text = f"{statistics.mean(values):.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def _probe_sets(source: str, num_points: int, train: int, test: int) -> dict[str, Any]:
    return {
        split: build_dataset(source, split, num_points, train=False, sampling="fps", num_samples=count)
        for split, count in (("train", train), ("test", test))
    }


def _probe(encoder: torch.nn.Module, sets: dict[str, Any]) -> tuple[dict[str, Any], float]:
    tic = time.perf_counter()
    result = svm_probe(encoder, sets["train"], sets["test"], seed=0)
    return result, time.perf_counter() - tic


@torch.no_grad()
def _target_stats(cfg: Stage2Config, teacher: str, clouds: int = 64) -> dict[str, float]:
    """Mean cos(target, mean target) over the patch targets of ``clouds`` validation clouds."""
    stats = {}
    for target in ("reference", "clean", "transformer"):
        task = Stage2Task(dataclasses.replace(cfg, target=target, teacher=teacher))
        dataset = task.val_dataset()
        points = torch.stack([dataset[i]["points"] for i in range(min(clouds, len(dataset)))])
        torch.manual_seed(0)
        patches, centers = task.group(task.augment(points))
        feats = task.targets(patches, centers)  # (B, G, C)
        feats = feats.reshape(-1, feats.shape[-1])
        stats[target] = float(F.cosine_similarity(feats, feats.mean(dim=0, keepdim=True), dim=-1).mean())
    return stats


def _table(rows: list[dict[str, Any]], targets: list[str], source: str) -> None:
    print(f"\n| target | probe accuracy on {source} (%) | mean class acc. (%) | final val loss | steps | pretrain wall (s) |")
    print("|---|---|---|---|---|---|")
    for target in [_SCRATCH, *targets]:
        sel = [r for r in rows if r["target"] == target]
        accs = [100 * r["probe"]["accuracy"] for r in sel]
        macc = [100 * r["probe"]["mean_class_accuracy"] for r in sel]
        val = [r["val_loss"] for r in sel if r.get("val_loss") is not None]
        wall = [r["train_s"] for r in sel if "train_s" in r]
        steps = sel[0].get("steps", "-")
        print(f"| {target} | {_fmt(accs)} | {_fmt(macc)} | {_fmt(val, 3) if val else '-'} | {steps} | "
              f"{_fmt(wall, 0) if wall else '-'} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="Stage I run folder or teacher.safetensors")
    parser.add_argument("--preset", default="tiny", help="Stage II preset (default tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--probe-data", default="synthetic", help="labelled synthetic source for the probe")
    parser.add_argument("--probe-train", type=int, default=560, help="labelled training shapes (default 560)")
    parser.add_argument("--probe-test", type=int, default=280, help="labelled test shapes (default 280)")
    parser.add_argument("--reprobe", default=None, metavar="RESULTS_JSON", help="probe these runs' students again")
    parser.add_argument("--target-stats", action="store_true", help="also measure how constant each target is")
    parser.add_argument("--out", required=True, help="folder for the runs and the JSON results")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = [*args.overrides, f"run.out_dir={out}", "run.progress=log", "run.tensorboard=false"]
    cfg0 = load_config(Stage2Config, args.preset, base, stage="pretrain")
    sets = _probe_sets(args.probe_data, cfg0.data.num_points, args.probe_train, args.probe_test)
    extra: dict[str, Any] = {}
    if args.target_stats:
        extra["target_cos_to_mean"] = _target_stats(cfg0, args.teacher)
        print(json.dumps(extra), flush=True)
    rows: list[dict[str, Any]] = []
    if args.reprobe is not None:
        previous = json.loads(Path(args.reprobe).read_text())["rows"]
        for row in previous:
            if row["target"] == _SCRATCH:
                torch.manual_seed(row["seed"])
                encoder = PointEncoder(cfg0.model.encoder_config())
            else:
                encoder = load_encoder(Path(row["run_dir"]) / "student.safetensors")
            probe, seconds = _probe(encoder, sets)
            rows.append({**row, "probe": probe, "probe_s": seconds, "probe_data": args.probe_data})
            print(json.dumps({"target": row["target"], "seed": row["seed"], "acc": probe["accuracy"]}), flush=True)
        name = f"reprobe-{args.probe_data}.json"
        targets = [t for t in TARGETS if any(r["target"] == t for r in rows)]
    else:
        for seed in args.seeds:
            torch.manual_seed(seed)
            probe, seconds = _probe(PointEncoder(cfg0.model.encoder_config()), sets)
            rows.append({"target": _SCRATCH, "seed": seed, "probe": probe, "probe_s": seconds})
            for target in args.targets:
                overrides = [*base, f"target={target}", f"runtime.seed={seed}", f"run.name={target}-s{seed}"]
                if target != "points":
                    overrides.append(f"teacher={args.teacher}")
                cfg = load_config(Stage2Config, args.preset, overrides, stage="pretrain")
                tic = time.perf_counter()
                result = pretrain(cfg)
                train_s = time.perf_counter() - tic
                probe, seconds = _probe(load_encoder(result.run_dir / "student.safetensors"), sets)
                rows.append({
                    "target": target, "seed": seed, "run_dir": str(result.run_dir), "steps": result.steps,
                    "val_loss": result.last.get("val/loss"), "train_loss": result.last.get("train/loss"),
                    "train_s": train_s, "probe": probe, "probe_s": seconds, "probe_data": args.probe_data,
                })  # fmt: skip
                print(json.dumps({"target": target, "seed": seed, "acc": probe["accuracy"], "train_s": train_s}), flush=True)
        name = "results.json"
        targets = list(args.targets)
    (out / name).write_text(json.dumps({"args": vars(args), **extra, "rows": rows}, indent=2) + "\n")
    _table(rows, targets, args.probe_data)


if __name__ == "__main__":
    main()
