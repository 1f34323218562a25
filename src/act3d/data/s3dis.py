"""S3DIS scene segmentation data: both on-disk layouts, room columns, class weights (ACT_SPEC §3, §4).

Layouts (``root`` may be either folder, or the folder above the raw one)::

    raw   Stanford3dDataset_v1.2_Aligned_Version/Area_{1..6}/<room>/Annotations/<class>_<i>.txt
          one object per file, ``x y z r g b`` per line; the class is the file name's stem
          without its ``_<i>`` suffix. Names outside the 13 classes (``stairs``) are clutter,
          as in the common preprocessing.
    npy   Area_<a>_<room>.npy, one (N, 7) array per room: ``x y z r g b label``.

Parsing a raw room reads big text files, so the result is cached as ``Area_<a>_<room>.<key>.npy``
(the npy layout, ``key`` a fingerprint of the annotation files' names, sizes and times) in
``cache_dir`` (default ``$ACT3D_CACHE_DIR/s3dis`` or ``~/.cache/act3d/s3dis``). The one known
defect of the public release (a stray control character in one line of
``Area_5/hallway_6/Annotations/ceiling_1.txt``) is tolerated: control characters other than
whitespace are dropped when a file does not parse as it is; anything else that does not
parse is an error naming the file and line.

Columns (the reference's sampling): a room is cut into ``block_size`` x ``block_size`` (1 m)
columns in xy, unbounded in z. Model inputs are xyz only, with xy relative to the column
centre and z either relative to the room's lowest point (``z_origin="room_min"``, the
default: the npy layout of the common preprocessing already has its minimum at 0, so both
layouts agree) or as stored (``"as_is"``).

- Training (:class:`RandomColumns`, ``train=True``): a room is picked in proportion to its
  points, a column is centred on a random point of it and re-drawn until it holds at least
  ``min_points`` points (1024); ``num_points`` (2048) of them are drawn, without
  replacement when there are enough. Samples: ``{"points": (num_points, 3) float32,
  "seg": (num_points,) int64}``.
- The reference's test protocol (``train=False``): the same sampling from a fixed seed,
  scored on the sampled points only.
- Whole-room evaluation: :func:`room_columns` covers a room with overlapping columns (stride
  < block) so that every point lies in at least one; :func:`column_chunks` splits a column's
  points into chunks of ``num_points``, every point in exactly one chunk (the last chunk is
  padded with repeated points, masked out of the vote).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DEFAULT_TEST_AREAS",
    "DEFAULT_TRAIN_AREAS",
    "RAW_DIRNAME",
    "S3DIS_CLASSES",
    "Z_ORIGINS",
    "RandomColumns",
    "Room",
    "RoomRef",
    "class_from_annotation",
    "column_chunks",
    "column_inputs",
    "default_cache_dir",
    "find_rooms",
    "label_histogram",
    "label_weights",
    "load_npy_room",
    "load_room",
    "load_s3dis",
    "parse_raw_room",
    "read_annotation_file",
    "room_columns",
]

S3DIS_CLASSES: tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
)  # fmt: skip
DEFAULT_TRAIN_AREAS: tuple[int, ...] = (1, 2, 3, 4, 6)
DEFAULT_TEST_AREAS: tuple[int, ...] = (5,)
RAW_DIRNAME = "Stanford3dDataset_v1.2_Aligned_Version"
Z_ORIGINS: tuple[str, ...] = ("room_min", "as_is")

_CLUTTER = S3DIS_CLASSES.index("clutter")
_CLASS_INDEX = {name: i for i, name in enumerate(S3DIS_CLASSES)}
_NPY_NAME = re.compile(r"^Area_(\d+)_(.+)\.npy$")
_AREA_DIR = re.compile(r"^Area_(\d+)$")
_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 13))
_CACHE_VERSION = "s3dis-v1"


# ----------------------------------------------------------------------------- rooms


@dataclass
class Room:
    """One scanned room, z up, metres.

    Attributes:
        name: ``Area_<a>_<room>`` (or any name for synthetic rooms).
        points: (N, 3) float32 xyz.
        colors: (N, 3) uint8 rgb (not used by the model; kept for pictures and export).
        labels: (N,) int64 class indices into :data:`S3DIS_CLASSES`.
        source: where the room came from (a path), for error messages.
    """

    name: str
    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.points)
        where = self.source or self.name
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"{where}: points must be (N, 3), got {self.points.shape}")
        if self.colors.shape != (n, 3) or self.labels.shape != (n,):
            raise ValueError(
                f"{where}: colors must be ({n}, 3) and labels ({n},), got {self.colors.shape} "
                f"and {self.labels.shape}"
            )
        if n == 0:
            raise ValueError(f"{where}: the room has no points")

    def __len__(self) -> int:
        return len(self.points)

    def to_array(self) -> np.ndarray:
        """The npy layout: (N, 7) float32 ``x y z r g b label``."""
        return np.concatenate(
            [self.points, self.colors.astype(np.float32), self.labels[:, None].astype(np.float32)], axis=1
        ).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray, name: str, source: str = "") -> Room:
        """Build from the npy layout (N, 7), checking it.

        Raises:
            ValueError: wrong shape, non-finite values or labels that are not integers in
                [0, 13), naming ``source``.
        """
        where = source or name
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != 7:
            raise ValueError(f"{where}: expected an (N, 7) array (x y z r g b label), got shape {array.shape}")
        if len(array) == 0:
            raise ValueError(f"{where}: the room has no points")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: holds NaN or infinite values")
        raw_labels = array[:, 6]
        labels = np.rint(raw_labels).astype(np.int64)
        bad = np.flatnonzero((labels != raw_labels) | (labels < 0) | (labels >= len(S3DIS_CLASSES)))
        if bad.size:
            raise ValueError(
                f"{where}: label column (7th) must hold integers in [0, {len(S3DIS_CLASSES)}); "
                f"row {int(bad[0])} has {raw_labels[bad[0]]!r} ({bad.size} bad row(s))"
            )
        colors = np.clip(np.rint(array[:, 3:6]), 0, 255).astype(np.uint8)
        return cls(name, np.ascontiguousarray(array[:, :3], dtype=np.float32), colors, labels, source)


@dataclass(frozen=True)
class RoomRef:
    """Where one room lives on disk.

    Attributes:
        area: the area number (1..6).
        name: ``Area_<a>_<room>``.
        path: the room folder (raw layout) or the ``.npy`` file.
        layout: ``"raw"`` or ``"npy"``.
    """

    area: int
    name: str
    path: Path
    layout: Literal["raw", "npy"]


def class_from_annotation(filename: str | os.PathLike[str]) -> int:
    """Class index of an annotation file ``<class>_<i>.txt``; names outside the 13 are clutter.

    >>> S3DIS_CLASSES[class_from_annotation("chair_12.txt")], S3DIS_CLASSES[class_from_annotation("stairs_1.txt")]
    ('chair', 'clutter')
    """
    stem = Path(filename).stem
    base, sep, suffix = stem.rpartition("_")
    name = base if sep and suffix.isdigit() else stem
    return _CLASS_INDEX.get(name.lower(), _CLUTTER)


def read_annotation_file(path: str | os.PathLike[str]) -> np.ndarray:
    """One annotation file -> (M, 6) float32 ``x y z r g b``.

    Raises:
        ValueError: a line without 6 numbers, naming the file and the line.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _parse_columns(data, path)
    except ValueError:
        cleaned = data.translate(None, _CONTROL)
        if cleaned == data:
            raise
        return _parse_columns(cleaned, path)


def _parse_columns(data: bytes, path: Path) -> np.ndarray:
    if not data.strip():
        return np.zeros((0, 6), dtype=np.float32)
    try:
        values = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path}: not lines of 6 numbers x y z r g b ({err})") from None
    if values.shape[1] != 6:
        raise ValueError(f"{path}: lines have {values.shape[1]} values, expected 6 (x y z r g b)")
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: holds NaN or infinite values")
    return values.astype(np.float32)


def parse_raw_room(room_dir: str | os.PathLike[str], name: str | None = None) -> Room:
    """Read a raw-layout room folder (its ``Annotations/*.txt``).

    Args:
        room_dir: ``.../Area_<a>/<room>``.
        name: the room's name (default ``Area_<a>_<room>`` from the path).

    Raises:
        FileNotFoundError: no ``Annotations`` folder.
        ValueError: no annotation file, or one that does not parse (naming it).
    """
    room_dir = Path(room_dir)
    ann = room_dir / "Annotations"
    if not ann.is_dir():
        raise FileNotFoundError(f"{room_dir}: no Annotations/ folder (expected Annotations/<class>_<i>.txt files)")
    files = sorted(p for p in ann.iterdir() if p.suffix == ".txt" and p.is_file())
    if not files:
        raise ValueError(f"{ann}: no <class>_<i>.txt annotation files")
    parts, labels = [], []
    for file in files:
        values = read_annotation_file(file)
        parts.append(values)
        labels.append(np.full(len(values), class_from_annotation(file.name), dtype=np.int64))
    values = np.concatenate(parts)
    if len(values) == 0:
        raise ValueError(f"{ann}: all annotation files are empty")
    name = name or f"{room_dir.parent.name}_{room_dir.name}"
    colors = np.clip(np.rint(values[:, 3:6]), 0, 255).astype(np.uint8)
    return Room(name, np.ascontiguousarray(values[:, :3]), colors, np.concatenate(labels), str(room_dir))


def load_npy_room(path: str | os.PathLike[str]) -> Room:
    """Read one npy-layout room ``Area_<a>_<room>.npy`` (N, 7).

    Raises:
        ValueError: not an (N, 7) numeric array, or bad labels, naming the file.
    """
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a plain numeric .npy array ({err})") from err
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    return Room.from_array(array.astype(np.float32, copy=False), path.stem, str(path))


def default_cache_dir() -> Path:
    """``$ACT3D_CACHE_DIR/s3dis``, else ``~/.cache/act3d/s3dis``."""
    base = os.environ.get("ACT3D_CACHE_DIR")
    return Path(base) / "s3dis" if base else Path.home() / ".cache" / "act3d" / "s3dis"


def _check_areas(areas: Iterable[int]) -> list[int]:
    out = sorted({int(a) for a in areas})
    if not out:
        raise ValueError("areas must name at least one area")
    return out


def _raw_base(root: Path) -> Path | None:
    for base in (root, root / RAW_DIRNAME):
        if base.is_dir() and any(_AREA_DIR.match(p.name) and p.is_dir() for p in base.iterdir()):
            return base
    return None


def find_rooms(root: str | os.PathLike[str], areas: Sequence[int]) -> list[RoomRef]:
    """The rooms of ``areas`` under ``root``, in either layout (npy files win when both exist).

    Args:
        root: a folder of ``Area_<a>_<room>.npy`` files, the raw
            ``Stanford3dDataset_v1.2_Aligned_Version`` folder, or its parent.
        areas: area numbers, e.g. ``[1, 2, 3, 4, 6]``.

    Returns:
        Room references sorted by area then name.

    Raises:
        FileNotFoundError: ``root`` missing, or holding neither layout.
        ValueError: an asked-for area has no rooms (naming the areas found).
    """
    root = Path(root)
    wanted = _check_areas(areas)
    if not root.is_dir():
        raise FileNotFoundError(f"S3DIS root {root} is not a folder")
    npy = []
    for path in root.glob("Area_*.npy"):
        match = _NPY_NAME.match(path.name)
        if match:
            npy.append(RoomRef(int(match.group(1)), path.stem, path, "npy"))
    refs: list[RoomRef]
    if npy:
        refs = npy
    else:
        base = _raw_base(root)
        if base is None:
            raise FileNotFoundError(
                f"{root}: no S3DIS rooms found; expected Area_<a>_<room>.npy files (N x 7: x y z r g b label) "
                f"or {RAW_DIRNAME}/Area_<a>/<room>/Annotations/<class>_<i>.txt"
            )
        refs = []
        for area_dir in base.iterdir():
            match = _AREA_DIR.match(area_dir.name)
            if not match or not area_dir.is_dir():
                continue
            for room in area_dir.iterdir():
                if (room / "Annotations").is_dir():
                    refs.append(RoomRef(int(match.group(1)), f"{area_dir.name}_{room.name}", room, "raw"))
    found = sorted({r.area for r in refs})
    missing = [a for a in wanted if a not in found]
    if missing:
        raise ValueError(f"{root}: no rooms for area(s) {missing}; areas found: {found}")
    return sorted((r for r in refs if r.area in wanted), key=lambda r: (r.area, r.name))


def _fingerprint(room_dir: Path) -> str:
    digest = hashlib.sha1(_CACHE_VERSION.encode())
    for path in sorted((room_dir / "Annotations").glob("*.txt")):
        stat = path.stat()
        digest.update(f"|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def load_room(ref: RoomRef, cache_dir: str | os.PathLike[str] | None = None) -> Room:
    """Load one room; a raw room is parsed once and then read from the cache.

    Args:
        ref: from :func:`find_rooms`.
        cache_dir: folder of parsed raw rooms (default :func:`default_cache_dir`).
    """
    if ref.layout == "npy":
        return load_npy_room(ref.path)
    if ref.layout != "raw":
        raise ValueError(f"unknown layout {ref.layout!r}; valid choices: 'raw', 'npy'")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = folder / f"{ref.name}.{_fingerprint(ref.path)}.npy"
    if cached.is_file():
        room = load_npy_room(cached)
        return dataclasses.replace(room, name=ref.name, source=str(ref.path))
    room = parse_raw_room(ref.path, ref.name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, room.to_array())
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return room


def load_s3dis(
    root: str | os.PathLike[str], areas: Sequence[int], cache_dir: str | os.PathLike[str] | None = None
) -> list[Room]:
    """All rooms of ``areas`` (see :func:`find_rooms` and :func:`load_room`)."""
    return [load_room(ref, cache_dir) for ref in find_rooms(root, areas)]


# ----------------------------------------------------------------------------- class weights


def label_histogram(rooms: Sequence[Room], num_classes: int = len(S3DIS_CLASSES)) -> np.ndarray:
    """(C,) int64 point counts per class over all ``rooms``."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for room in rooms:
        counts += np.bincount(room.labels, minlength=num_classes)[:num_classes]
    return counts


def label_weights(counts: np.ndarray | Sequence[int], power: float = 1.0 / 3.0) -> np.ndarray:
    """Class weights ``(max freq / freq) ** power`` (the reference's, power 1/3).

    Args:
        counts: (C,) points per class.
        power: the exponent; 0 gives all ones.

    Returns:
        (C,) float32; a class without points gets 0 (it is never a target).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"counts must be a 1-d array of non-negative counts with a positive sum, got {counts}")
    freq = counts / counts.sum()
    weights = np.zeros_like(freq)
    present = freq > 0
    weights[present] = (freq.max() / freq[present]) ** power
    return weights.astype(np.float32)


# ----------------------------------------------------------------------------- columns


def _z_offset(room_points: np.ndarray, z_origin: str) -> float:
    if z_origin == "room_min":
        return float(room_points[:, 2].min())
    if z_origin == "as_is":
        return 0.0
    raise ValueError(f"unknown z_origin {z_origin!r}; valid choices: {list(Z_ORIGINS)}")


def column_inputs(points: np.ndarray, center_xy: Sequence[float], z_offset: float) -> np.ndarray:
    """Model inputs of a column: xy minus the column centre, z minus ``z_offset``.

    Args:
        points: (M, 3) room coordinates.
        center_xy: the column centre (2,).
        z_offset: the room's lowest z (``z_origin="room_min"``) or 0.

    Returns:
        (M, 3) float32.
    """
    out = np.asarray(points, dtype=np.float64).copy()
    out[:, 0] -= center_xy[0]
    out[:, 1] -= center_xy[1]
    out[:, 2] -= z_offset
    return out.astype(np.float32)


def _block_starts(lo: float, hi: float, block: float, stride: float) -> np.ndarray:
    count = max(1, int(math.ceil((hi - lo - block) / stride - 1e-9)) + 1)
    starts = lo + stride * np.arange(count)
    return np.minimum(starts, max(lo, hi - block))


def room_columns(
    points: np.ndarray, block_size: float = 1.0, stride: float = 0.5, eps: float = 1e-4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cover a room with overlapping columns; every point lies in at least one.

    The grid starts at the room's minimum xy with step ``stride``; the last column of each
    row ends at the maximum, so the columns cover the bounding box (``stride <= block_size``).

    Args:
        points: (N, 3) room xyz.
        block_size: column side in xy (metres).
        stride: grid step (< ``block_size`` for overlap).
        eps: tolerance on the column bounds.

    Returns:
        Non-empty columns as ``(center_xy (2,), point indices (M,) int64 ascending)``.
    """
    if not 0 < stride <= block_size:
        raise ValueError(f"stride must be in (0, block_size={block_size}], got {stride} (larger leaves gaps)")
    xy = np.asarray(points)[:, :2].astype(np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    order = np.argsort(xy[:, 0], kind="stable")
    xs = xy[order, 0]
    out = []
    for x0 in _block_starts(lo[0], hi[0], block_size, stride):
        a, b = np.searchsorted(xs, x0 - eps, "left"), np.searchsorted(xs, x0 + block_size + eps, "right")
        slab = order[a:b]
        ys = xy[slab, 1]
        for y0 in _block_starts(lo[1], hi[1], block_size, stride):
            idx = slab[(ys >= y0 - eps) & (ys <= y0 + block_size + eps)]
            if idx.size:
                center = np.array([x0 + block_size / 2, y0 + block_size / 2])
                out.append((center, np.sort(idx)))
    return out


def column_chunks(
    indices: np.ndarray, num_points: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a column's points into model-sized chunks, each point in exactly one chunk.

    The points are shuffled and cut into ``ceil(M / num_points)`` chunks; the last one is
    padded to ``num_points`` with points drawn from the whole column (repeats), which are
    marked invalid so they do not vote.

    Args:
        indices: (M,) point indices of the column.
        num_points: points per chunk.
        rng: shuffling and padding randomness.

    Returns:
        ``[(chunk indices (num_points,) int64, valid (num_points,) bool)]``; over all chunks
        the valid entries are a permutation of ``indices``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("column_chunks needs at least one point")
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    shuffled = indices[rng.permutation(indices.size)]
    out = []
    for start in range(0, shuffled.size, num_points):
        chunk = shuffled[start : start + num_points]
        valid = np.ones(num_points, dtype=bool)
        if chunk.size < num_points:
            need = num_points - chunk.size
            pad = indices[rng.choice(indices.size, need, replace=indices.size < need)]
            valid[chunk.size :] = False
            chunk = np.concatenate([chunk, pad])
        out.append((chunk, valid))
    return out


class RandomColumns(Dataset):
    """Random 1 m columns of rooms (training, and the reference's test protocol).

    Item ``i`` comes from a room fixed by ``i`` (rooms get items in proportion to their
    points); the column centre and the points are random: from torch's RNG when ``train``
    (so the engine's seeding and resume apply), from ``(seed, i)`` otherwise.

    Args:
        rooms: the rooms.
        num_points: points per sample (2048).
        block_size: column side in metres (1.0).
        min_points: fewest points a column must hold (1024); a column centre is re-drawn
            up to ``max_tries`` times, then the fullest column tried is used.
        num_samples: items per epoch; default ``sum(points) * sample_rate / num_points``.
        sample_rate: see ``num_samples`` (the reference's 1.0).
        z_origin: ``"room_min"`` or ``"as_is"`` (see the module docstring).
        train: random draws from torch's RNG (True) or fixed per item (False).
        seed: base seed of the fixed draws.
        max_tries: column re-draws before giving up on ``min_points``.
    """

    def __init__(
        self,
        rooms: Sequence[Room],
        num_points: int = 2048,
        *,
        block_size: float = 1.0,
        min_points: int = 1024,
        num_samples: int | None = None,
        sample_rate: float = 1.0,
        z_origin: str = "room_min",
        train: bool = True,
        seed: int = 0,
        max_tries: int = 200,
    ) -> None:
        if not rooms:
            raise ValueError("RandomColumns needs at least one room")
        if num_points < 1 or min_points < 0 or block_size <= 0 or sample_rate <= 0:
            raise ValueError(
                f"need num_points >= 1, min_points >= 0, block_size > 0, sample_rate > 0; got "
                f"{num_points}, {min_points}, {block_size}, {sample_rate}"
            )
        if z_origin not in Z_ORIGINS:
            raise ValueError(f"unknown z_origin {z_origin!r}; valid choices: {list(Z_ORIGINS)}")
        self.num_points, self.block_size, self.min_points = int(num_points), float(block_size), int(min_points)
        self.z_origin, self.train, self.seed, self.max_tries = z_origin, bool(train), int(seed), int(max_tries)
        self.room_names = [r.name for r in rooms]
        self.class_names = list(S3DIS_CLASSES)
        self.num_classes = len(S3DIS_CLASSES)
        self._xyz, self._labels, self._xs, self._z0 = [], [], [], []
        for room in rooms:
            order = np.argsort(room.points[:, 0], kind="stable")
            xyz = np.ascontiguousarray(room.points[order], dtype=np.float32)
            self._xyz.append(xyz)
            self._labels.append(room.labels[order].astype(np.uint8))
            self._xs.append(xyz[:, 0].astype(np.float64))
            self._z0.append(_z_offset(xyz, z_origin))
        sizes = np.array([len(r) for r in rooms], dtype=np.float64)
        if num_samples is None:
            num_samples = max(1, int(sizes.sum() * sample_rate / num_points))
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples = int(num_samples)
        share = np.cumsum(sizes) / sizes.sum()
        positions = (np.arange(self.num_samples) + 0.5) / self.num_samples
        self._room_of = np.minimum(np.searchsorted(share, positions), len(rooms) - 1)

    def __len__(self) -> int:
        return self.num_samples

    def room_of(self, index: int) -> int:
        """The room (index into ``rooms``) item ``index`` is drawn from."""
        return int(self._room_of[index])

    def _generator(self, index: int) -> np.random.Generator:
        if self.train:
            return np.random.default_rng([self.seed, int(torch.randint(0, 2**62, (1,)).item()), index])
        return np.random.default_rng([self.seed, 0x5C3E, index])

    def _column(self, room: int, center: np.ndarray) -> np.ndarray:
        xyz, xs, half = self._xyz[room], self._xs[room], self.block_size / 2
        a = np.searchsorted(xs, center[0] - half, "left")
        b = np.searchsorted(xs, center[0] + half, "right")
        ys = xyz[a:b, 1]
        return a + np.flatnonzero((ys >= center[1] - half) & (ys <= center[1] + half))

    def draw(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One sample's ``(inputs (num_points, 3), labels (num_points,), room indices)``.

        The room indices refer to the room's points sorted by x (internal order).
        """
        room = self.room_of(index)
        xyz = self._xyz[room]
        best: tuple[np.ndarray, np.ndarray] | None = None
        for _ in range(self.max_tries):
            center = xyz[rng.integers(len(xyz)), :2].astype(np.float64)
            idx = self._column(room, center)
            if best is None or idx.size > best[1].size:
                best = (center, idx)
            if idx.size >= self.min_points:
                break
        assert best is not None
        center, idx = best
        pick = rng.choice(idx.size, self.num_points, replace=idx.size < self.num_points)
        chosen = idx[pick]
        inputs = column_inputs(xyz[chosen], center, self._z0[room])
        return inputs, self._labels[room][chosen].astype(np.int64), chosen

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        inputs, labels, _ = self.draw(int(index), self._generator(int(index)))
        return {"points": torch.from_numpy(inputs), "seg": torch.from_numpy(labels)}
