"""``act3d eval | probe | fewshot | embed``: the downstream evaluation commands.

- ``act3d eval CKPT --data SOURCE [--vote 10]`` — overall and mean class accuracy of a
  fine-tuned classifier, ``scores.json`` and ``confusion.png``.
- ``act3d probe CKPT --data SOURCE [--C X]`` — linear SVM on frozen encoder features.
- ``act3d fewshot CKPT --way 5 --shot 10 [--folds 10] [--data fewshot[:DIR] | SOURCE]`` —
  full fine-tuning per fold, mean ± std over folds.
- ``act3d embed CKPT INPUT... --out feats.npy [--points 1024] [--tsne plot.png]`` — frozen
  features of cloud/mesh files (or of a labelled ``--data`` split).

Heavy imports (torch, sklearn) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval``, ``probe``, ``fewshot`` and ``embed`` commands to the parser."""
    ev = subparsers.add_parser(
        "eval",
        help="accuracy, mean class accuracy and confusion matrix of a fine-tuned classifier",
        description="Evaluate a classifier (classifier.safetensors or a fine-tune run folder) on a "
        "labelled split. --vote V averages the logits of V augmented views per shape (scale & "
        "translate of a fresh FPS-pool subset), the ModelNet40 voting protocol.",
    )
    ev.add_argument("ckpt", metavar="CKPT", help="classifier.safetensors or a fine-tune run folder (seed-<s>/)")
    ev.add_argument("--data", metavar="SOURCE", default=None, help="data source (default: the one it was trained on)")
    ev.add_argument("--split", default="test", help="split to score (default: test)")
    ev.add_argument("--vote", type=int, default=0, metavar="V", help="augmented views per shape (0: none; paper: 10)")
    ev.add_argument("--points", type=int, default=None, help="points per shape (default: the training setting)")
    _common(ev)
    ev.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <ckpt folder>/eval-<time>)")
    ev.set_defaults(func=_eval)

    pr = subparsers.add_parser(
        "probe",
        help="linear SVM accuracy of frozen encoder features",
        description="Linear SVM probe: frozen features of the train and test splits (test-mode "
        "FPS sampling, no augmentation), standardised with the training statistics; C chosen by "
        "3-fold stratified cross-validation on the training set from 0.001..10 unless --C is given.",
    )
    pr.add_argument("ckpt", metavar="CKPT", help="student .safetensors, Stage II run folder or classifier.safetensors")
    pr.add_argument("--data", metavar="SOURCE", required=True, help="labelled data source, e.g. modelnet40:DIR")
    pr.add_argument("--points", type=int, default=1024, help="points per shape (default 1024)")
    pr.add_argument("--C", dest="svm_c", type=float, default=None, help="fixed SVM C (default: chosen by CV)")
    pr.add_argument("--train-samples", type=int, default=None, help="synthetic sources: training shapes generated")
    pr.add_argument("--test-samples", type=int, default=None, help="synthetic sources: test shapes generated")
    pr.add_argument("--out", default=None, metavar="FILE", help="also write the result as JSON here")
    _common(pr)
    pr.set_defaults(func=_probe)

    fs = subparsers.add_parser(
        "fewshot",
        help="few-shot classification: fine-tune per fold, mean ± std over folds",
        description="W-way S-shot few-shot classification. With --data fewshot[:DIR] the standard "
        "ModelNet40 folds are used; with any other labelled SOURCE, folds are drawn with a fixed "
        "seed (W classes, S training shapes per class, 20 test shapes per class).",
    )
    fs.add_argument("ckpt", metavar="CKPT", help="student .safetensors, Stage II run folder, or 'scratch'")
    fs.add_argument("--way", type=int, required=True)
    fs.add_argument("--shot", type=int, required=True)
    fs.add_argument("--folds", type=int, default=10)
    fs.add_argument("--data", metavar="SOURCE", default=None, help="fewshot[:DIR] (standard folds) or a labelled SOURCE")
    fs.add_argument("--test-per-class", type=int, default=20, help="drawn folds: test shapes per class (default 20)")
    fs.add_argument("--fold-seed", type=int, default=0, help="drawn folds: seed (default 0)")
    fs.add_argument("--config", dest="preset", default=None, metavar="CONFIG",
                    help="fewshot preset (paper, tiny) or a YAML file (default: paper)")
    fs.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value (repeatable)")
    fs.add_argument("--resume", default=None, metavar="GROUP_DIR", help="continue a few-shot run group")
    fs.set_defaults(func=_fewshot)

    em = subparsers.add_parser(
        "embed",
        help="frozen encoder features of cloud/mesh files (or a data split), optional t-SNE plot",
        description="Embed point clouds and meshes (.npy .npz .xyz .txt .pts .ply .off .obj .stl; "
        "folders are searched) with a frozen encoder: writes OUT (M x 2D float32 .npy) and a JSON "
        "sidecar with the input names. --data SOURCE embeds a labelled split instead of files.",
    )
    em.add_argument("ckpt", metavar="CKPT", help="student .safetensors, Stage II run folder or classifier.safetensors")
    em.add_argument("inputs", metavar="INPUT", nargs="*", help="files or folders")
    em.add_argument("--out", required=True, metavar="FEATS.npy")
    em.add_argument("--points", type=int, default=1024, help="points per shape (default 1024)")
    em.add_argument("--data", metavar="SOURCE", default=None, help="embed this labelled source's split instead")
    em.add_argument("--split", default="test", help="with --data: the split (default test)")
    em.add_argument("--samples", type=int, default=None, help="with a synthetic --data: shapes generated")
    em.add_argument("--tsne", default=None, metavar="PLOT.png", help="also draw a t-SNE map, coloured by label")
    _common(em)
    em.set_defaults(func=_embed)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)


def _device(name: str) -> Any:
    from act3d.train.engine import resolve_device

    return resolve_device(name)


def _backbone(ckpt: str, device: Any) -> Any:
    from act3d.models.student import PointEncoder, load_encoder_state
    from act3d.train.finetune import load_init_backbone

    config, state, path = load_init_backbone(ckpt)
    encoder = PointEncoder(config)
    load_encoder_state(encoder, state, strict=True, source=str(path))
    return encoder.to(device).eval()


def _write_json(path: Path, data: Any) -> None:
    from act3d.checkpoint import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _eval(args: argparse.Namespace) -> int:
    from act3d.data import build_dataset
    from act3d.eval.classify import evaluate_classifier
    from act3d.eval.plots import plot_confusion
    from act3d.train.finetune import load_classifier

    device = _device(args.device)
    model = load_classifier(args.ckpt, device=device)
    source = args.data or model.data_source
    if not source:
        raise ValueError(f"{args.ckpt}: no data source recorded; pass --data SOURCE")
    points = args.points or model.num_points
    dataset = build_dataset(source, args.split, points, train=False, sampling="fps")
    if dataset.num_classes != model.num_classes:
        raise ValueError(
            f"{source} split {args.split!r} has {dataset.num_classes} classes but the classifier has "
            f"{model.num_classes}"
        )
    views = build_dataset(source, args.split, points, train=True, sampling="fps") if args.vote else None
    tic = time.perf_counter()
    scores = evaluate_classifier(
        model, dataset, num_classes=model.num_classes, vote=args.vote, vote_dataset=views,
        batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    seconds = time.perf_counter() - tic
    ckpt = Path(args.ckpt)
    base = ckpt if ckpt.is_dir() else ckpt.parent
    out = Path(args.out) if args.out else base / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.class_names) or dataset.class_names
    result = {
        "checkpoint": str(args.ckpt),
        "data": source,
        "split": args.split,
        "num_points": points,
        "vote": args.vote,
        "seed": args.seed,
        "seconds": seconds,
        **scores.to_dict(names),
    }
    _write_json(out / "scores.json", result)
    title = f"{source} {args.split}: OA {100 * scores.accuracy:.2f}%, mAcc {100 * scores.mean_class_accuracy:.2f}%"
    plot_confusion(scores.confusion, names, out / "confusion.png", title=title)
    vote = f", {args.vote}-view voting" if args.vote else ""
    print(f"{source} {args.split} ({scores.count} shapes{vote}): overall accuracy {100 * scores.accuracy:.2f}%, "
          f"mean class accuracy {100 * scores.mean_class_accuracy:.2f}%")
    print(f"wrote {out / 'scores.json'} and {out / 'confusion.png'}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from act3d.data import build_dataset, is_synthetic
    from act3d.eval.probe import svm_probe

    device = _device(args.device)
    encoder = _backbone(args.ckpt, device)
    synthetic = is_synthetic(args.data)
    caps = {"train": args.train_samples, "test": args.test_samples}
    sets = {
        split: build_dataset(
            args.data, split, args.points, train=False, sampling="fps",
            num_samples=caps[split] if synthetic else None,
        )  # fmt: skip
        for split in ("train", "test")
    }
    tic = time.perf_counter()
    result = svm_probe(encoder, sets["train"], sets["test"], C=args.svm_c, batch_size=args.batch_size, seed=args.seed)
    result.update({"checkpoint": args.ckpt, "data": args.data, "num_points": args.points,
                   "seconds": time.perf_counter() - tic})
    how = "fixed" if args.svm_c is not None else "chosen by 3-fold CV on train"
    print(f"linear SVM probe on {args.data}: accuracy {100 * result['accuracy']:.2f}%, mean class accuracy "
          f"{100 * result['mean_class_accuracy']:.2f}% (C={result['C']:g}, {how}; {result['num_train']} train / "
          f"{result['num_test']} test shapes, {result['feature_dim']}-d features)")
    if args.out:
        _write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    from act3d.config import load_config
    from act3d.eval.fewshot import format_fewshot, run_fewshot
    from act3d.train.finetune import FinetuneConfig

    if args.resume is not None:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: no config.yaml in {args.resume}")
        cfg = load_config(FinetuneConfig, saved, args.overrides)
    else:
        overrides = [f"model.init={args.ckpt}", "model.mode=full"]
        if args.data is not None:
            overrides.append(f"data.source={args.data}")
        cfg = load_config(FinetuneConfig, args.preset or "paper", overrides + list(args.overrides), stage="fewshot")
    summary = run_fewshot(
        cfg, args.way, args.shot, folds=args.folds, num_test=args.test_per_class,
        fold_seed=args.fold_seed, group_dir=args.resume,
    )  # fmt: skip
    print(format_fewshot(summary))
    print(f"group: {summary.group_dir}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from act3d.eval.embed import embed_files, embed_points, labels_from_parents, save_embeddings

    if bool(args.inputs) == bool(args.data):
        raise ValueError("give INPUT files/folders or --data SOURCE (one of the two)")
    device = _device(args.device)
    encoder = _backbone(args.ckpt, device)
    class_names: list[str] | None
    if args.data:
        from act3d.data import build_dataset, is_synthetic

        synthetic = is_synthetic(args.data)
        dataset = build_dataset(args.data, args.split, args.points, train=False, sampling="fps",
                                num_samples=args.samples if synthetic else None)
        points = np.stack([dataset[i]["points"].numpy() for i in range(len(dataset))])
        labels = np.asarray(dataset.labels, dtype=np.int64)
        feats = embed_points(encoder, points, batch_size=args.batch_size)
        names = [f"{args.data}:{args.split}:{i}" for i in range(len(dataset))]
        class_names = list(getattr(dataset, "class_names", [])) or None
    else:
        feats, names = embed_files(encoder, args.inputs, num_points=args.points, batch_size=args.batch_size,
                                   seed=args.seed)
        labels, parents = labels_from_parents(names)
        class_names = parents or None
    has_labels = bool((labels >= 0).any())
    meta = {"checkpoint": args.ckpt, "num_points": args.points}
    npy, sidecar = save_embeddings(
        feats, names, args.out, labels=labels if has_labels else None, class_names=class_names, meta=meta
    )
    print(f"wrote {npy} ({feats.shape[0]} x {feats.shape[1]} float32) and {sidecar}")
    if args.tsne:
        from act3d.eval.plots import plot_tsne

        plot_tsne(feats, args.tsne, labels=labels if has_labels else None, class_names=class_names,
                  title=f"t-SNE of {Path(args.ckpt).name} features", seed=args.seed)
        print(f"wrote {args.tsne}")
    return 0
