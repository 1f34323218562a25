"""Import a folder of clouds/meshes into one h5 in the ScanObjectNN layout.

The output holds ``data`` (M, P, 3) float32, ``label`` (M,) int64 (``-1`` when unlabeled),
``class_names`` (an h5 string dataset and a JSON attribute) and ``files`` (source paths
relative to the folder).  It is written to a temporary file beside the target and renamed
at the end, so a failed import never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from act3d.data.folder import discover_shapes
from act3d.data.io import read_shape, shape_to_points

__all__ = ["ImportReport", "import_folder"]


@dataclass
class ImportReport:
    """What :func:`import_folder` wrote and what it skipped.

    Attributes:
        out_path: the h5 file written.
        num_shapes: shapes written.
        class_names: class names (empty when unlabeled).
        skipped: ``(path, reason)`` for every file left out.
    """

    out_path: str
    num_shapes: int
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _normalize(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred * centred).sum(axis=1)).max())
    return centred / radius if radius > 0 else centred


def import_folder(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    num_points: int = 2048,
    *,
    labels_from_folders: bool = False,
    skip_bad: bool = False,
    seed: int = 0,
    sampling: str = "fps",
    normalize: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> ImportReport:
    """Read every shape file under ``src`` and write ``out`` (h5, ScanObjectNN layout).

    Args:
        src: folder of shape files (searched recursively).
        out: output ``.h5`` path.
        num_points: points per shape (meshes: area-uniform samples reduced by FPS; clouds:
            reduced by ``sampling``; a cloud with fewer points is bad input).
        labels_from_folders: class = first sub-folder under ``src``.
        skip_bad: skip unreadable/invalid files (listed in the report) instead of failing.
        seed: seed of mesh sampling (each file gets its own stream from its relative path).
        sampling: ``"fps"``, ``"random"`` or ``"first"`` for reducing clouds.
        normalize: centre each shape and scale it to the unit sphere.
        progress: optional callback ``(done, total, path)``.

    Returns:
        An :class:`ImportReport`.

    Raises:
        FileNotFoundError: ``src`` is missing.
        ValueError: a bad file (without ``skip_bad``, naming it and the problem), or
            nothing left to write.
    """
    import h5py

    src, out = os.fspath(src), os.fspath(out)
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    found = discover_shapes(src, labels_from_folders=labels_from_folders)
    skipped: list[tuple[str, str]] = []
    for path in found.loose:
        reason = "not inside a class sub-folder (labels come from folders)"
        if not skip_bad:
            raise ValueError(f"{path}: {reason}")
        skipped.append((path, reason))
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".act3d-import-", suffix=".h5.tmp", dir=out_dir)
    os.close(fd)
    written = 0
    try:
        with h5py.File(tmp, "w") as f:
            data = f.create_dataset("data", shape=(0, num_points, 3), maxshape=(None, num_points, 3),
                                    dtype=np.float32, chunks=(16, num_points, 3))
            labels: list[int] = []
            names: list[str] = []
            total = len(found.files)
            for k, (path, label) in enumerate(zip(found.files, found.labels)):
                rel = os.path.relpath(path, src)
                rng = np.random.default_rng([seed, zlib.crc32(rel.encode())])
                try:
                    pts = shape_to_points(read_shape(path), num_points, rng, method=sampling)
                except (ValueError, OSError) as err:
                    if not skip_bad:
                        raise ValueError(str(err) if str(err).startswith(path) else f"{path}: {err}") from err
                    skipped.append((path, str(err).removeprefix(path + ": ")))
                    continue
                if normalize:
                    pts = _normalize(pts.astype(np.float64)).astype(np.float32)
                data.resize(written + 1, axis=0)
                data[written] = pts
                labels.append(label)
                names.append(rel)
                written += 1
                if progress is not None:
                    progress(k + 1, total, path)
            if written == 0:
                raise ValueError(f"{src}: no shapes imported ({len(skipped)} skipped)")
            f.create_dataset("label", data=np.array(labels, dtype=np.int64))
            f.create_dataset("class_names", data=np.array(found.class_names, dtype=object),
                             dtype=h5py.string_dtype())
            f.create_dataset("files", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
            f.attrs["class_names"] = json.dumps(found.class_names)
            f.attrs["num_points"] = num_points
            f.attrs["source"] = os.path.abspath(src)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return ImportReport(
        out_path=out, num_shapes=written, class_names=list(found.class_names), skipped=skipped
    )
