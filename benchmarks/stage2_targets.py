"""Compare the Stage II targets on one budget, scored by a linear SVM probe.

Every target (``reference``, ``clean``, ``transformer``, ``points``) pre-trains the same
student from the same seed, on the same data and schedule, with the same Stage I teacher;
each exported ``student.safetensors`` is then scored by :func:`act3d.eval.probe.svm_probe`
(the implementation behind ``act3d probe``: frozen [cls ‖ max] features of test-mode FPS
points, standardised, LinearSVC with C chosen by 3-fold CV on the training split) on the
labelled synthetic train/test splits. A randomly initialised student of the same size is
probed too, as the floor.

Usage::

    act3d pretrain-teacher --config tiny --out runs/bench     # once; prints RUN_DIR
    python benchmarks/stage2_targets.py --teacher RUN_DIR --out runs/bench/stage2 \\
        [--preset tiny] [--set optim.epochs=8 ...] [--seeds 0 1]

Writes ``<out>/results.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from act3d.config import load_config
from act3d.data import build_dataset
from act3d.eval.probe import svm_probe
from act3d.models.encoder_api import load_encoder
from act3d.models.student import PointEncoder
from act3d.train.stage2 import TARGETS, Stage2Config, pretrain


def _probe_sets(cfg: Stage2Config, train: int, test: int) -> dict[str, object]:
    return {
        split: build_dataset(
            "synthetic", split, cfg.data.num_points, train=False, sampling="fps", num_samples=count
        )
        for split, count in (("train", train), ("test", test))
    }


def _fmt(values: list[float], digits: int = 1) -> str:
    text = f"{statistics.mean(values):.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="Stage I run folder or teacher.safetensors")
    parser.add_argument("--preset", default="tiny", help="Stage II preset (default tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--probe-train", type=int, default=560, help="labelled training shapes (default 560)")
    parser.add_argument("--probe-test", type=int, default=280, help="labelled test shapes (default 280)")
    parser.add_argument("--out", required=True, help="folder for the runs and results.json")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = [*args.overrides, f"run.out_dir={out}", "run.progress=log", "run.tensorboard=false"]
    probe_cfg = load_config(Stage2Config, args.preset, base, stage="pretrain")
    sets = _probe_sets(probe_cfg, args.probe_train, args.probe_test)
    rows: list[dict[str, object]] = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        scratch = PointEncoder(probe_cfg.model.encoder_config())
        tic = time.perf_counter()
        probe = svm_probe(scratch, sets["train"], sets["test"], seed=0)
        rows.append({"target": "none (random init)", "seed": seed, "probe": probe,
                     "probe_s": time.perf_counter() - tic})  # fmt: skip
        for target in args.targets:
            overrides = [*base, f"target={target}", f"runtime.seed={seed}", f"run.name={target}-s{seed}"]
            if target != "points":
                overrides.append(f"teacher={args.teacher}")
            cfg = load_config(Stage2Config, args.preset, overrides, stage="pretrain")
            tic = time.perf_counter()
            result = pretrain(cfg)
            train_s = time.perf_counter() - tic
            encoder = load_encoder(result.run_dir / "student.safetensors")
            tic = time.perf_counter()
            probe = svm_probe(encoder, sets["train"], sets["test"], seed=0)
            rows.append({
                "target": target, "seed": seed, "run_dir": str(result.run_dir), "steps": result.steps,
                "val_loss": result.last.get("val/loss"), "train_loss": result.last.get("train/loss"),
                "train_s": train_s, "probe": probe, "probe_s": time.perf_counter() - tic,
            })  # fmt: skip
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "probe"} | {"acc": probe["accuracy"]}), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")

    print("\n| target | probe accuracy (%) | mean class acc. (%) | final val loss | steps | pretrain wall (s) |")
    print("|---|---|---|---|---|---|")
    for target in ["none (random init)", *args.targets]:
        sel = [r for r in rows if r["target"] == target]
        accs = [100 * r["probe"]["accuracy"] for r in sel]
        macc = [100 * r["probe"]["mean_class_accuracy"] for r in sel]
        val = [r["val_loss"] for r in sel if r.get("val_loss") is not None]
        steps = sel[0].get("steps", "-")
        wall = [r["train_s"] for r in sel if "train_s" in r]
        print(f"| {target} | {_fmt(accs)} | {_fmt(macc)} | {_fmt(val, 3) if val else '-'} | {steps} | "
              f"{_fmt(wall, 0) if wall else '-'} |")  # fmt: skip


if __name__ == "__main__":
    main()
