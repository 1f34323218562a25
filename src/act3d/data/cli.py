"""``act3d data ...``: import folders, show samples, describe a data source."""

from __future__ import annotations

import argparse

__all__ = ["register"]

_SOURCE_HELP = (
    "data SOURCE: synthetic | synthetic-scan | synthetic-parts | shapenet[:DIR] | modelnet40[:DIR] | "
    "scanobjectnn:OBJ_BG|OBJ_ONLY|PB_T50_RS[:DIR] | fewshot:WAY:SHOT:FOLD[:DIR] | "
    "shapenetpart[:DIR] | h5:PATH | folder:DIR"
)


def register(subparsers) -> None:
    """Add the ``data`` command group (``import``, ``show``, ``info``)."""
    data = subparsers.add_parser("data", help="import, inspect and render point-cloud data")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=_usage(data))

    imp = sub.add_parser("import", help="import a folder of clouds/meshes into one h5 (ScanObjectNN layout)")
    imp.add_argument("src", metavar="DIR", help="folder of .npy/.npz/.ply/.xyz/.txt/.off/.obj/.stl files")
    imp.add_argument("out", metavar="OUT.h5", help="output h5 file (written atomically)")
    imp.add_argument("--points", type=int, default=2048, help="points per shape (default 2048)")
    imp.add_argument("--labels-from-folders", action="store_true", help="label by first sub-folder name")
    imp.add_argument("--skip-bad", action="store_true",
                     help="skip bad files and list them instead of failing")
    imp.add_argument("--seed", type=int, default=0, help="seed of mesh surface sampling")
    imp.add_argument("--sampling", choices=("fps", "random", "first"), default="fps",
                     help="how clouds with more points are reduced (default fps)")
    imp.add_argument("--no-normalize", action="store_true",
                     help="keep coordinates as read (default: unit sphere)")
    imp.set_defaults(func=_cmd_import)

    show = sub.add_parser("show", help="render a grid of samples to a PNG")
    show.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP)
    show.add_argument("--out", required=True, help="output PNG path")
    show.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    show.add_argument("--split", default="test", help="split to show (default test)")
    show.add_argument("--points", type=int, default=2048, help="points per sample (default 2048)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--root", default=None, help="dataset folder when SOURCE names none")
    show.set_defaults(func=_cmd_show)

    info = sub.add_parser("info", help="print size and class counts of a data source")
    info.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP)
    info.add_argument("--split", default="test")
    info.add_argument("--points", type=int, default=1024)
    info.add_argument("--root", default=None)
    info.set_defaults(func=_cmd_info)


def _usage(parser: argparse.ArgumentParser):
    def handler(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return handler


def _cmd_import(args: argparse.Namespace) -> int:
    from act3d.data.importer import import_folder

    report = import_folder(
        args.src, args.out, args.points, labels_from_folders=args.labels_from_folders,
        skip_bad=args.skip_bad, seed=args.seed, sampling=args.sampling, normalize=not args.no_normalize,
    )
    classes = f", {len(report.class_names)} classes" if report.class_names else ", unlabeled"
    print(f"wrote {report.num_shapes} shapes x {args.points} points{classes} to {report.out_path}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s):")
        for path, reason in report.skipped:
            print(f"  {path}: {reason}")
    return 0


def _pick_indices(labels, n: int) -> list[int]:
    """Up to ``n`` indices, cycling over classes so every class shows up."""
    import numpy as np

    labels = np.asarray(labels)
    if labels.size == 0 or (labels < 0).all():
        return np.linspace(0, labels.size - 1, min(n, labels.size)).round().astype(int).tolist()
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels[labels >= 0])]
    picked: list[int] = []
    while len(picked) < min(n, labels.size) and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(int(q.pop(0)))
    return picked


def _cmd_show(args: argparse.Namespace) -> int:
    from act3d.data.sources import build_dataset
    from act3d.viz import render_clouds

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    ds = build_dataset(args.source, args.split, args.points, root=args.root, train=False, seed=args.seed)
    idx = _pick_indices(ds.labels, args.n)
    clouds, titles, parts = [], [], []
    for i in idx:
        sample = ds[i]
        clouds.append(sample["points"])
        lab = int(sample["label"])
        titles.append(ds.class_names[lab] if 0 <= lab < len(ds.class_names) else f"#{i}")
        if "seg" in sample:  # part-labelled sets: colour points by part, not by height
            parts.append(sample["seg"])
    labels = parts if len(parts) == len(clouds) else None
    path = render_clouds(clouds, titles, args.out, suptitle=f"{args.source} ({args.split})", labels=labels)
    print(f"wrote {len(clouds)} samples of {args.source} to {path}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from act3d.data.sources import build_dataset

    ds = build_dataset(args.source, args.split, args.points, root=args.root, train=False)
    print(f"{args.source} [{args.split}]: {len(ds)} samples, {ds.num_classes} classes")
    labels = ds.labels
    if ds.num_classes:
        counts = np.bincount(labels[labels >= 0], minlength=ds.num_classes)
        for name, count in zip(ds.class_names, counts):
            print(f"  {name}: {count}")
    return 0
