"""Any folder of shape files as a dataset (unlabeled, or labeled by sub-folder).

Layouts understood (``split`` picks the part of a split layout):

- ``DIR/<split>/<class>/...`` (e.g. ``DIR/train/chair/a.off``)
- ``DIR/<class>/<split>/...`` (the raw ModelNet ``.off`` layout)
- ``DIR/<class>/...`` or a flat ``DIR/...`` (no split: every split sees all files)

With labels the class is the first folder level (below the split folder, if any); files
are found recursively with the extensions of :data:`act3d.data.io.SHAPE_EXTENSIONS`.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from act3d.data.datasets import PointCloudDataset
from act3d.data.io import SHAPE_EXTENSIONS, read_shape, sample_surface
from act3d.data.sampling import file_signature

__all__ = ["PointFolder", "discover_shapes", "ShapeFileList"]


class ShapeFileList:
    """Result of :func:`discover_shapes`.

    Attributes:
        files: sorted shape file paths.
        labels: per-file class index (``-1`` when unlabeled).
        class_names: sorted class folder names (empty when unlabeled).
        loose: files that could not be given a class (directly in a labeled root).
    """

    def __init__(self, files: list[str], labels: list[int], class_names: list[str], loose: list[str]) -> None:
        self.files, self.labels, self.class_names, self.loose = files, labels, class_names, loose


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in SHAPE_EXTENSIONS]
    return sorted(out)


def _subdirs(path: str) -> list[str]:
    return sorted(
        d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith(".")
    )


def discover_shapes(
    root: str, labels_from_folders: bool | None = None, split: str | None = None
) -> ShapeFileList:
    """Find shape files under ``root``.

    Args:
        root: folder to scan.
        labels_from_folders: label by first-level sub-folder; ``None`` decides
            automatically (labeled when there are sub-folders and no loose shape files).
        split: ``"train"``/``"test"`` to select a split layout (see module docstring).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no shape files found.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: folder not found")
    base = root
    per_class_split = False
    if split is not None:
        if os.path.isdir(os.path.join(root, split)):
            base = os.path.join(root, split)
        else:
            classes = _subdirs(root)
            per_class_split = bool(classes) and all(
                os.path.isdir(os.path.join(root, c, split)) for c in classes
            )
    files = _walk(base)
    if per_class_split:
        files = [f for f in files if os.path.relpath(f, base).split(os.sep)[1:2] == [split]]
    if not files:
        raise ValueError(f"{base}: no shape files found (extensions {list(SHAPE_EXTENSIONS)})")
    rel = [os.path.relpath(f, base).split(os.sep) for f in files]
    loose = [f for f, r in zip(files, rel) if len(r) == 1]
    if labels_from_folders is None:
        labels_from_folders = not loose
    if not labels_from_folders:
        return ShapeFileList(files, [-1] * len(files), [], [])
    class_names = sorted({r[0] for r in rel if len(r) > 1})
    index = {c: i for i, c in enumerate(class_names)}
    kept = [(f, index[r[0]]) for f, r in zip(files, rel) if len(r) > 1]
    return ShapeFileList([f for f, _ in kept], [lab for _, lab in kept], class_names, loose)


class PointFolder(PointCloudDataset):
    """A folder of point clouds / meshes as a dataset.

    Meshes are sampled uniformly by area once per file (``mesh_points`` samples, seeded by
    ``seed`` and the file's position) before the usual sampling; clouds are used as they
    are (a cloud with fewer than ``num_points`` points is an error naming the file).

    Args:
        root: the folder.
        split: ``"train"``/``"test"``; used only when the folder has a split layout.
        num_points: points per sample.
        labels_from_folders: see :func:`discover_shapes`.
        mesh_points: surface samples per mesh (default ``max(8192, 4 * num_points)``).
        **kwargs: :class:`PointCloudDataset` options (``train``, ``sampling``, ``transform``,
            ``seed``, ``normalize``, ``cache_dir`` ...).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        num_points: int,
        *,
        labels_from_folders: bool | None = None,
        mesh_points: int | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("train", split == "train")
        super().__init__(num_points, **kwargs)
        if split not in ("train", "test", "pretrain"):
            raise ValueError(f"split must be one of ['train', 'test', 'pretrain'], got {split!r}")
        found = discover_shapes(os.fspath(root), labels_from_folders, None if split == "pretrain" else split)
        if found.loose:
            raise ValueError(
                f"{root}: labels come from sub-folders but {len(found.loose)} file(s) are not in one, "
                f"e.g. {found.loose[:3]}"
            )
        self.root, self.split = os.fspath(root), split
        self.files = found.files
        self._labels = np.array(found.labels, dtype=np.int64)
        self.class_names = found.class_names
        self.num_classes = len(found.class_names)
        self.mesh_points = mesh_points or max(8192, 4 * self.num_points)

    _cache_raw = True

    def __len__(self) -> int:
        return len(self.files)

    def _label(self, index: int) -> int:
        return int(self._labels[index])

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def _source(self, index: int) -> str:
        return self.files[index]

    def _cache_key(self, index: int) -> str | None:
        return f"{file_signature(self.files[index])}|mesh={self.mesh_points}|seed={self.seed}"

    def _load(self, index: int) -> np.ndarray:
        shape = read_shape(self.files[index])
        if shape.is_mesh:
            rel = os.path.relpath(self.files[index], self.root)
            rng = np.random.default_rng([self.seed, zlib.crc32(rel.encode())])
            return sample_surface(shape.vertices, shape.faces, self.mesh_points, rng).astype(np.float32)
        return shape.vertices.astype(np.float32)
