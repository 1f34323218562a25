"""``build_dataset``: one SOURCE string names any dataset act3d reads.

SOURCE grammar (fixed parameters first, the optional folder last, so paths may contain
colons)::

    synthetic                      procedural shapes (splits pretrain / train / test)
    synthetic-scan                 the ScanObjectNN-like partial, cluttered variant
    synthetic-parts                part-labelled procedural shapes (train / val / test)
    shapenet[:DIR]                 ShapeNet-55/34 .npy folder, unlabeled (train/test/pretrain)
    modelnet40[:DIR]               .dat pickles or modelnet40_normal_resampled text layout
    scanobjectnn:VARIANT[:DIR]     VARIANT in OBJ_BG, OBJ_ONLY, PB_T50_RS
    fewshot:WAY:SHOT:FOLD[:DIR]    ModelNet40 few-shot fold, e.g. fewshot:5:10:0
    shapenetpart[:DIR]             part segmentation (train = train+val, val, test)
    h5:PATH                        any h5 with data/label; "{split}" in PATH is replaced
    folder:DIR                     any folder of clouds/meshes (labels from sub-folders)

A named dataset without DIR uses ``root=``, else ``$ACT3D_DATA_ROOT/<Name>``, else
``./data/<Name>`` with <Name> from :data:`DEFAULT_DIRS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from act3d.data.datasets import (
    SCANOBJECTNN_VARIANTS,
    ModelNet40,
    ModelNetFewShot,
    PointCloudDataset,
    ScanObjectNN,
    ShapeNet55,
    ShapeNetPart,
    H5PointClouds,
)
from act3d.data.folder import PointFolder
from act3d.data.synthetic import SyntheticParts, SyntheticShapes

__all__ = ["build_dataset", "is_synthetic", "parse_source", "SOURCE_KINDS", "DEFAULT_DIRS", "default_root"]

SOURCE_KINDS: tuple[str, ...] = (
    "synthetic", "synthetic-scan", "synthetic-parts", "shapenet", "modelnet40", "scanobjectnn", "fewshot",
    "shapenetpart", "h5", "folder",
)  # fmt: skip

DEFAULT_DIRS: dict[str, str] = {
    "shapenet": "ShapeNet55-34",
    "modelnet40": "ModelNet40",
    "scanobjectnn": "ScanObjectNN",
    "fewshot": "ModelNetFewshot",
    "shapenetpart": "ShapeNetPart",
}

_LAYOUTS: dict[str, str] = {
    "shapenet": "train.txt, test.txt and <synset>-<id>.npy files (or ShapeNet-55/ + shapenet_pc/)",
    "modelnet40": "modelnet40_{train,test}_8192pts_fps.dat, or modelnet40_normal_resampled/ with "
    "modelnet40_shape_names.txt, modelnet40_{train,test}.txt and <class>/<id>.txt",
    "scanobjectnn": "main_split/, main_split_nobg/ with {training,test}_objectdataset*.h5 "
    "(optionally under h5_files/)",
    "fewshot": "<way>way_<shot>shot/<fold>.pkl",
    "shapenetpart": "<synset>/<id>.txt and train_test_split/shuffled_{train,val,test}_file_list.json",
}

_SYNTHETIC_KINDS = ("synthetic", "synthetic-scan", "synthetic-parts")

_SPLITS: dict[str, tuple[str, ...]] = {
    "synthetic": ("pretrain", "train", "test"),
    "synthetic-scan": ("pretrain", "train", "test"),
    "synthetic-parts": ("train", "val", "test"),
    "shapenet": ("pretrain", "train", "test"),
    "modelnet40": ("train", "test"),
    "scanobjectnn": ("train", "test"),
    "fewshot": ("train", "test"),
    "shapenetpart": ("train", "val", "test"),
    "h5": ("train", "test"),
    "folder": ("pretrain", "train", "test"),
}


def default_root(kind: str) -> str:
    """Default folder of a named dataset: ``$ACT3D_DATA_ROOT/<Name>`` or ``./data/<Name>``."""
    base = os.environ.get("ACT3D_DATA_ROOT") or os.path.join(".", "data")
    return os.path.join(base, DEFAULT_DIRS[kind])


def parse_source(source: str) -> tuple[str, list[str]]:
    """Split a SOURCE string into its kind and parameters (see the module docstring).

    Returns:
        ``(kind, params)``; for kinds with an optional folder the last parameter is the
        folder when given.

    Raises:
        ValueError: unknown kind or wrong parameters.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string, got {source!r}")
    kind, _, rest = source.partition(":")
    kind = kind.lower()
    if kind not in SOURCE_KINDS:
        raise ValueError(
            f"unknown data source kind {kind!r} in {source!r}; valid kinds: {list(SOURCE_KINDS)}"
        )
    if kind in _SYNTHETIC_KINDS:
        if rest:
            raise ValueError(f"{source!r}: '{kind}' takes no parameters")
        return kind, []
    if kind in ("h5", "folder"):
        if not rest:
            example = "file.h5" if kind == "h5" else "dir"
            raise ValueError(f"{source!r}: '{kind}' needs a path, e.g. {kind}:path/to/{example}")
        return kind, [rest]
    if kind == "scanobjectnn":
        variant, _, folder = rest.partition(":")
        if variant.upper() not in SCANOBJECTNN_VARIANTS:
            raise ValueError(
                f"{source!r}: ScanObjectNN variant must be one of {list(SCANOBJECTNN_VARIANTS)}, "
                f"got {variant!r}"
            )
        return kind, [variant.upper()] + ([folder] if folder else [])
    if kind == "fewshot":
        parts = rest.split(":", 3)
        if len(parts) < 3:
            raise ValueError(f"{source!r}: expected fewshot:WAY:SHOT:FOLD[:DIR], e.g. fewshot:5:10:0")
        try:
            nums = [int(p.lower().removesuffix("way").removesuffix("shot")) for p in parts[:3]]
        except ValueError as err:
            raise ValueError(f"{source!r}: WAY, SHOT and FOLD must be integers ({err})") from err
        return kind, [str(n) for n in nums] + parts[3:]
    return kind, [rest] if rest else []


def is_synthetic(source: str) -> bool:
    """Whether ``source`` is a built-in generated set (``synthetic``, ``synthetic-scan``,
    ``synthetic-parts``): it takes ``num_samples`` (how many shapes to generate) instead of
    being read from disk. Raises like :func:`parse_source` on a malformed source."""
    return parse_source(source)[0] in _SYNTHETIC_KINDS


def build_dataset(
    source: str,
    split: str,
    num_points: int,
    *,
    root: str | None = None,
    train: bool | None = None,
    transform: Callable | None = None,
    seed: int = 0,
    sampling: str | None = None,
    cache_dir: str | None = None,
    normalize: bool | None = None,
    num_samples: int | None = None,
    **kwargs,
) -> PointCloudDataset:
    """Build the dataset a SOURCE string names.

    Args:
        source: see the module docstring.
        split: ``"train"``, ``"test"`` (plus ``"pretrain"`` for synthetic/shapenet/folder and
            ``"val"`` for shapenetpart and synthetic-parts).
        num_points: points per sample.
        root: folder of a named dataset when SOURCE gives none.
        train: training-mode sampling; default ``split in ("train", "pretrain")``.
        transform: per-sample transform (see :class:`~act3d.data.datasets.PointCloudDataset`).
        seed: base seed of all randomness.
        sampling: ``"fps"``, ``"random"`` or ``"first"``; default per dataset.
        cache_dir: on-disk FPS-pool cache folder.
        normalize: unit-sphere normalisation per sample; default per dataset.
        num_samples: dataset length (synthetic sources only).
        **kwargs: extra options of the dataset class (e.g. ``labels_from_folders``,
            ``mesh_points``, ``raw_points``, ``pool_size``, ``resample``, ``class_names``).

    Returns:
        A :class:`~act3d.data.datasets.PointCloudDataset`.

    Raises:
        ValueError: unknown kind, bad parameters or split.
        FileNotFoundError: the data folder/file is missing (naming the expected layout).
    """
    kind, params = parse_source(source)
    if split not in _SPLITS[kind]:
        raise ValueError(f"split for '{kind}' must be one of {list(_SPLITS[kind])}, got {split!r}")
    opts = dict(kwargs)
    for name, value in (("train", train), ("transform", transform), ("sampling", sampling),
                        ("cache_dir", cache_dir), ("normalize", normalize)):
        if value is not None:
            opts[name] = value
    opts.setdefault("train", split in ("train", "pretrain"))
    opts["seed"] = seed
    if num_samples is not None and kind not in _SYNTHETIC_KINDS:
        raise ValueError(f"num_samples applies to synthetic sources only, not {kind!r}")

    if kind == "synthetic-parts":
        return SyntheticParts(split, num_points, num_samples=num_samples, **opts)
    if kind in ("synthetic", "synthetic-scan"):
        scan = kind == "synthetic-scan"
        return SyntheticShapes(split, num_points, num_samples=num_samples, scan=scan, **opts)
    if kind == "h5":
        path = params[0].replace("{split}", split)
        return H5PointClouds(path, num_points, **opts)
    if kind == "folder":
        return PointFolder(params[0], split, num_points, **opts)

    folder = _named_root(kind, params, root)
    if kind == "shapenet":
        return ShapeNet55(folder, split, num_points, **opts)
    if kind == "modelnet40":
        return ModelNet40(folder, split, num_points, **opts)
    if kind == "scanobjectnn":
        return ScanObjectNN(folder, params[0], split, num_points, **opts)
    if kind == "fewshot":
        way, shot, fold = (int(p) for p in params[:3])
        return ModelNetFewShot(folder, way, shot, fold, split, num_points, **opts)
    return ShapeNetPart(folder, split, num_points, **opts)


def _named_root(kind: str, params: list[str], root: str | None) -> str:
    fixed = {"scanobjectnn": 1, "fewshot": 3}.get(kind, 0)
    if len(params) > fixed:
        folder, origin = params[fixed], "the source string"
    elif root is not None:
        folder, origin = root, "root="
    else:
        folder = default_root(kind)
        origin = "$ACT3D_DATA_ROOT" if os.environ.get("ACT3D_DATA_ROOT") else "the default ./data"
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{folder}: {kind} data folder not found (from {origin}); expected layout: {_LAYOUTS[kind]}. "
            f"Pass {kind}:DIR, root=..., or set ACT3D_DATA_ROOT (looked for <root>/{DEFAULT_DIRS[kind]})"
        )
    return folder
