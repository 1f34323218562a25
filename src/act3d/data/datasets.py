"""Torch datasets for the on-disk layouts of ACT_SPEC §4.

Every dataset returns ``{"points": float32 (N, 3), "label": int64 ()}`` (unlabeled: ``-1``;
:class:`ShapeNetPart` adds ``"seg": int64 (N,)``).  Labeled datasets expose ``num_classes``
and ``class_names``.

Sampling (``sampling=``):

- ``"fps"`` (the downstream protocol, §3): each shape is reduced once by FPS (start 0) to
  a pool (1200 points for 1024); ``train=True`` returns a fresh random subset of the pool
  in random order, ``train=False`` returns the first ``num_points`` of the pool, which is
  exactly FPS to ``num_points``.  Pools are cached in memory and, with ``cache_dir``, on
  disk (keyed by file path, mtime, size, item and pool size).
- ``"random"``: a random subset of all points (the pre-training protocol); deterministic
  per index when ``train=False``.
- ``"first"``: the first ``num_points`` points.

Training randomness: after :meth:`PointCloudDataset.set_epoch` the subset (and the
transform's draws) depend only on ``(seed, epoch, index)``, independent of DataLoader
workers; before it, they come from torch's global RNG (which DataLoader seeds per worker
and epoch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from act3d.data.safe_pickle import safe_load_pickle
from act3d.data.sampling import PoolCache, file_signature, fps_indices, pool_size_for
from act3d.data.transforms import Transform

__all__ = [
    "PointCloudDataset",
    "ShapeNet55",
    "ModelNet40",
    "H5PointClouds",
    "ScanObjectNN",
    "ModelNetFewShot",
    "ShapeNetPart",
    "MODELNET40_CLASSES",
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_VARIANTS",
    "SHAPENETPART_CATEGORIES",
    "SAMPLING_MODES",
]

SAMPLING_MODES = ("fps", "random", "first")

MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair",
    "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar",
    "keyboard", "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano",
    "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent",
    "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # fmt: skip

SCANOBJECTNN_CLASSES: tuple[str, ...] = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip

# variant -> (sub-folder, file stem); files are <sub-folder>/{training,test}_<stem>.h5
SCANOBJECTNN_VARIANTS: dict[str, tuple[str, str]] = {
    "OBJ_BG": ("main_split", "objectdataset"),
    "OBJ_ONLY": ("main_split_nobg", "objectdataset"),
    "PB_T50_RS": ("main_split", "objectdataset_augmentedrot_scale75"),
}

# category -> (synset, global part ids); 16 categories, 50 parts.
SHAPENETPART_CATEGORIES: dict[str, tuple[str, tuple[int, ...]]] = {
    "Airplane": ("02691156", (0, 1, 2, 3)),
    "Bag": ("02773838", (4, 5)),
    "Cap": ("02954340", (6, 7)),
    "Car": ("02958343", (8, 9, 10, 11)),
    "Chair": ("03001627", (12, 13, 14, 15)),
    "Earphone": ("03261776", (16, 17, 18)),
    "Guitar": ("03467668", (19, 20, 21)),
    "Knife": ("03624134", (22, 23)),
    "Lamp": ("03636649", (24, 25, 26, 27)),
    "Laptop": ("03642806", (28, 29)),
    "Motorbike": ("03790512", (30, 31, 32, 33, 34, 35)),
    "Mug": ("03797390", (36, 37)),
    "Pistol": ("03948459", (38, 39, 40)),
    "Rocket": ("04099429", (41, 42, 43)),
    "Skateboard": ("04225521", (44, 45, 46)),
    "Table": ("04379243", (47, 48, 49)),
}


def _check_finite(arr: np.ndarray, source: str) -> None:
    if not np.isfinite(arr).all():
        bad = ~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
        raise ValueError(
            f"{source}: {int(bad.sum())} row(s) with NaN/inf values (first at index {int(np.argmax(bad))})"
        )


def _normalize_np(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred * centred).sum(axis=1)).max())
    return centred / radius if radius > 0 else centred


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip()]


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        raise ValueError(
            f"{source}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"[0, {num_classes}) ({bad.size} bad label(s))"
        )


class PointCloudDataset(Dataset):
    """Base class: sampling, normalisation, caching and transforms shared by all loaders.

    Subclasses implement ``__len__``, ``_load(i) -> (N, C) float32`` (xyz first; a 4th
    column holds part labels for segmentation sets), ``_label(i) -> int`` and optionally
    ``_cache_key(i) -> str | None`` (a stable key for the on-disk cache).

    Args:
        num_points: points per returned sample.
        train: training-mode sampling (random subsets) or test-mode (deterministic).
        sampling: ``"fps"``, ``"random"`` or ``"first"`` (see the module docstring).
        transform: applied to the (N, 3) points tensor; a :class:`Transform` receives a
            per-sample generator (so DataLoader workers never repeat each other).
        seed: base seed of all per-sample randomness.
        normalize: centre and scale each sample to the unit sphere (after sampling).
        cache_dir: directory of the on-disk FPS-pool cache (``None``: memory only).
        pool_size: FPS pool size; default from :func:`pool_size_for`.
        resample: allow sampling with replacement when a shape has fewer points than
            needed (otherwise that is an error naming the file).
    """

    _seg = False  # whether _load returns a part-label column
    _cache_raw = False  # whether to keep raw arrays in memory in "random"/"first" modes

    def __init__(
        self,
        num_points: int,
        *,
        train: bool,
        sampling: str = "fps",
        transform: Callable | None = None,
        seed: int = 0,
        normalize: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        pool_size: int | None = None,
        resample: bool = False,
    ) -> None:
        if not isinstance(num_points, (int, np.integer)) or isinstance(num_points, bool) or num_points < 1:
            raise ValueError(f"num_points must be a positive int, got {num_points!r}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {list(SAMPLING_MODES)}, got {sampling!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if pool_size is not None and pool_size < num_points:
            raise ValueError(f"pool_size ({pool_size}) must be >= num_points ({num_points})")
        self.num_points = int(num_points)
        self.train = bool(train)
        self.sampling = sampling
        self.transform = transform
        self.seed = int(seed)
        self.normalize = normalize
        self.pool_size = pool_size
        self.resample = resample
        self._epoch: int | None = None
        self._cache = PoolCache(cache_dir, memory=True)
        self.num_classes = 0
        self.class_names: list[str] = []

    # ----------------------------------------------------------------- subclass hooks
    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _label(self, index: int) -> int:
        return -1

    def _cache_key(self, index: int) -> str | None:
        return None

    def _source(self, index: int) -> str:
        return f"{type(self).__name__}[{index}]"

    # ----------------------------------------------------------------- public API
    @property
    def labels(self) -> np.ndarray:
        """(len,) int64 labels of all samples (``-1`` when unlabeled)."""
        return np.array([self._label(i) for i in range(len(self))], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Make training randomness a function of ``(seed, epoch, index)``."""
        self._epoch = int(epoch)

    def precompute(self, batch_size: int = 64) -> None:
        """Compute the FPS pools of all shapes now, batching shapes of equal size.

        Only meaningful with ``sampling="fps"``; otherwise a no-op.
        """
        if self.sampling != "fps":
            return
        todo = [i for i in range(len(self)) if i not in self._cache]
        pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for i in todo:
            if self._cache.has_on_disk(self._fps_key(i)):
                self._pool(i)
                continue
            raw = self._checked_raw(i)
            pool = self._pool_count(raw.shape[0])
            group = pending.setdefault((raw.shape[0], pool), [])
            group.append((i, raw))
            if len(group) >= batch_size:
                self._flush(group, pool)
                group.clear()
        for (_, pool), group in pending.items():
            if group:
                self._flush(group, pool)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = int(index) % len(self)
        pool = self._pool(index)
        rng = self._rng(index)
        chosen = self._choose(pool, index, rng)
        pts = chosen[:, :3].astype(np.float32)
        if self.normalize:
            pts = _normalize_np(pts.astype(np.float64)).astype(np.float32)
        points = torch.from_numpy(np.ascontiguousarray(pts))
        if self.transform is not None:
            if isinstance(self.transform, Transform):
                gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
                points = self.transform(points, generator=gen)
            else:
                points = self.transform(points)
        sample = {"points": points, "label": torch.tensor(self._label(index), dtype=torch.int64)}
        if self._seg:
            sample["seg"] = torch.from_numpy(chosen[:, 3].astype(np.int64))
        return sample

    # ----------------------------------------------------------------- internals
    def _checked_raw(self, index: int) -> np.ndarray:
        raw = self._load(index)
        src = self._source(index)
        if raw.ndim != 2 or raw.shape[1] < 3:
            raise ValueError(f"{src}: expected an (N, 3) point array, got shape {raw.shape}")
        _check_finite(raw[:, :3], src)
        if raw.shape[0] < self.num_points and not self.resample:
            raise ValueError(
                f"{src}: has {raw.shape[0]} points, fewer than the {self.num_points} asked for"
            )
        if raw.shape[0] == 0:
            raise ValueError(f"{src}: has no points")
        return raw

    def _pool_count(self, available: int) -> int:
        if self.pool_size is not None:
            return min(self.pool_size, available)
        return min(pool_size_for(self.num_points, available), available)

    def _fps_key(self, index: int) -> str | None:
        base = self._cache_key(index)
        if base is None:
            return None
        return f"{base}|fps|n={self.num_points}|p={self.pool_size}|seg={self._seg}"

    def _pool(self, index: int) -> np.ndarray:
        if self.sampling == "fps":
            key = self._fps_key(index)

            def compute() -> np.ndarray:
                raw = self._checked_raw(index)
                count = self._pool_count(raw.shape[0])
                return np.ascontiguousarray(raw[fps_indices(raw[:, :3], count)])

            return self._cache.get(index, key, compute)
        if self._cache_raw:
            base = self._cache_key(index)
            key = None if base is None else f"{base}|raw"
            return self._cache.get(index, key, lambda: self._checked_raw(index))
        return self._checked_raw(index)

    def _flush(self, group: list[tuple[int, np.ndarray]], pool: int) -> None:
        idx = fps_indices(np.stack([r[:, :3] for _, r in group]), pool)
        for (i, raw), sel in zip(group, idx):
            self._cache.put(i, self._fps_key(i), np.ascontiguousarray(raw[sel]))

    def _rng(self, index: int) -> np.random.Generator:
        if not self.train:
            return np.random.default_rng([self.seed, 0x7E57, index])
        if self._epoch is not None:
            return np.random.default_rng([self.seed, self._epoch, index])
        return np.random.default_rng([self.seed, int(torch.randint(0, 2**62, (1,)).item()), index])

    def _choose(self, pool: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
        n, count = self.num_points, pool.shape[0]
        if count < n:  # only reachable with resample=True
            base = rng.permutation(count) if self.train else np.arange(count)
            return pool[np.concatenate([base, rng.choice(count, n - count, replace=True)])]
        if self.sampling == "first" or (self.sampling == "fps" and not self.train):
            return pool[:n]
        return pool[rng.permutation(count)[:n]]


# --------------------------------------------------------------------------- ShapeNet-55/34


class ShapeNet55(PointCloudDataset):
    """ShapeNet-55/34: a folder of ``<synset>-<model id>.npy`` (8192x3) + ``train.txt``/``test.txt``.

    ``root`` may be the folder holding the lists (``ShapeNet-55/``) or its parent
    (``ShapeNet55-34/`` with ``ShapeNet-55/`` and ``shapenet_pc/``); the ``.npy`` files are
    looked up in ``shapenet_pc/`` beside or below the lists, else next to the lists.
    Unlabeled (label ``-1``).  ``split="pretrain"`` is train + test (Stage II data).
    Default sampling ``"random"`` (the pre-training protocol).
    """

    def __init__(self, root: str | os.PathLike[str], split: str, num_points: int, **kwargs) -> None:
        kwargs.setdefault("sampling", "random")
        kwargs.setdefault("train", split in ("train", "pretrain"))
        super().__init__(num_points, **kwargs)
        root = os.fspath(root)
        if split not in ("train", "test", "pretrain"):
            raise ValueError(f"split must be one of ['train', 'test', 'pretrain'], got {split!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"{root}: ShapeNet-55 folder not found (expected train.txt/test.txt and the .npy files)"
            )
        list_dirs = (root, os.path.join(root, "ShapeNet-55"))
        list_dir = next((d for d in list_dirs if os.path.isfile(os.path.join(d, "train.txt"))), None)
        if list_dir is None:
            raise FileNotFoundError(
                f"{root}: no train.txt (looked in {root} and {os.path.join(root, 'ShapeNet-55')}); "
                "expected the ShapeNet-55 layout: train.txt, test.txt and <synset>-<id>.npy files"
            )
        splits = ["train", "test"] if split == "pretrain" else [split]
        names: list[str] = []
        for s in splits:
            names += _read_lines(os.path.join(list_dir, f"{s}.txt"))
        if not names:
            raise ValueError(f"{list_dir}: the {split} list is empty")
        candidates = [
            os.path.join(root, "shapenet_pc"), os.path.join(list_dir, "shapenet_pc"),
            os.path.join(os.path.dirname(list_dir), "shapenet_pc"), list_dir, root,
        ]
        data_dir = next((d for d in candidates if os.path.isfile(os.path.join(d, names[0]))), None)
        if data_dir is None:
            raise FileNotFoundError(
                f"{root}: cannot find {names[0]} (listed in {split}.txt) in any of {candidates}"
            )
        self.root, self.split, self.data_dir = root, split, data_dir
        self.files = [os.path.join(data_dir, n) for n in names]
        missing = [f for f in self.files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(
                f"{data_dir}: {len(missing)} file(s) listed in {split}.txt are missing, e.g. {missing[:3]}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def _source(self, index: int) -> str:
        return self.files[index]

    def _cache_key(self, index: int) -> str | None:
        return file_signature(self.files[index])

    def _load(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path}: not a plain numpy array ({err})") from err
        if arr.ndim != 2 or arr.shape[1] < 3 or arr.dtype.kind not in "fiu":
            raise ValueError(f"{path}: expected an (N, 3) numeric array, got {arr.shape} {arr.dtype}")
        return arr[:, :3].astype(np.float32)


# --------------------------------------------------------------------------- ModelNet40


class _ArrayBacked(PointCloudDataset):
    """Shapes held in memory as a list/array of (N, C) arrays with integer labels."""

    def _init_arrays(self, clouds, labels: np.ndarray, source: str, item_keys: Sequence[str]) -> None:
        self._clouds = clouds
        self._labels = labels.astype(np.int64)
        self._src = source
        self._item_keys = list(item_keys)

    def __len__(self) -> int:
        return len(self._clouds)

    def _load(self, index: int) -> np.ndarray:
        return np.asarray(self._clouds[index], dtype=np.float32)

    def _label(self, index: int) -> int:
        return int(self._labels[index])

    def _source(self, index: int) -> str:
        return f"{self._src} (shape {index})"

    def _cache_key(self, index: int) -> str | None:
        return self._item_keys[index] if self._item_keys else None

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()


def _file_item_keys(path: str, count: int, tag: str = "") -> list[str]:
    sig = file_signature(path)
    return [f"{sig}|{tag}{i}" for i in range(count)]


class ModelNet40(_ArrayBacked):
    """ModelNet40 in either of its two common layouts under ``root``:

    - preprocessed pickles ``modelnet40_{train,test}_8192pts_fps.dat`` holding
      ``(list of 8192x6 arrays, list of (1,) int arrays)`` (read with the restricted
      unpickler), optionally beside ``modelnet40_shape_names.txt``;
    - the text layout ``modelnet40_normal_resampled/``: ``modelnet40_shape_names.txt``,
      ``modelnet40_{train,test}.txt`` (ids like ``airplane_0001``) and
      ``<class>/<id>.txt`` with ``x,y,z,nx,ny,nz`` per line.

    ``root`` may be that folder or its parent.  Only xyz is returned.
    """

    def __init__(self, root: str | os.PathLike[str], split: str, num_points: int, **kwargs) -> None:
        kwargs.setdefault("train", split == "train")
        super().__init__(num_points, **kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"split must be one of ['train', 'test'], got {split!r}")
        root = os.fspath(root)
        self.root, self.split = root, split
        dirs = [root, os.path.join(root, "modelnet40_normal_resampled")]
        dat = next((os.path.join(d, f"modelnet40_{split}_8192pts_fps.dat") for d in dirs
                    if os.path.isfile(os.path.join(d, f"modelnet40_{split}_8192pts_fps.dat"))), None)
        text_dir = next((d for d in dirs if os.path.isfile(os.path.join(d, f"modelnet40_{split}.txt"))), None)
        if dat is None and text_dir is None:
            raise FileNotFoundError(
                f"{root}: no ModelNet40 data; expected modelnet40_{split}_8192pts_fps.dat or "
                f"modelnet40_shape_names.txt + modelnet40_{split}.txt + <class>/<id>.txt "
                f"(in {root} or {dirs[1]})"
            )
        base = os.path.dirname(dat) if dat is not None else text_dir
        names_file = os.path.join(base, "modelnet40_shape_names.txt")
        if os.path.isfile(names_file):
            self.class_names = _read_lines(names_file)
        elif dat is not None:
            self.class_names = list(MODELNET40_CLASSES)
        else:
            raise FileNotFoundError(f"{names_file}: class list not found (text layout needs it)")
        self.num_classes = len(self.class_names)
        if dat is not None:
            self._files: list[str] | None = None
            self._init_dat(dat)
        else:
            self._init_text(text_dir, split)

    def _init_dat(self, path: str) -> None:
        obj = safe_load_pickle(path)
        if not isinstance(obj, (list, tuple)) or len(obj) != 2:
            raise ValueError(f"{path}: expected a pickled pair (list of point arrays, list of labels)")
        clouds, labels = obj
        if len(clouds) != len(labels):
            raise ValueError(f"{path}: {len(clouds)} point arrays but {len(labels)} labels")
        if not clouds:
            raise ValueError(f"{path}: contains no shapes")
        xyz = []
        for i, c in enumerate(clouds):
            c = np.asarray(c)
            if c.ndim != 2 or c.shape[1] < 3 or c.dtype.kind not in "fiu":
                raise ValueError(f"{path}: shape {i} has array shape {c.shape} {c.dtype}, expected (N, 6)")
            xyz.append(np.ascontiguousarray(c[:, :3], dtype=np.float32))
        try:
            lab = np.array([np.asarray(lb).reshape(-1)[0] for lb in labels])
        except IndexError as err:
            raise ValueError(f"{path}: an empty label entry") from err
        if lab.dtype.kind not in "iu" and not np.all(np.mod(lab, 1) == 0):
            raise ValueError(f"{path}: labels must be integers, got dtype {lab.dtype}")
        lab = lab.astype(np.int64)
        _check_labels(lab, self.num_classes, path)
        for i, c in enumerate(xyz):
            _check_finite(c, f"{path} (shape {i})")
        self._init_arrays(xyz, lab, path, _file_item_keys(path, len(xyz)))

    def _init_text(self, base: str, split: str) -> None:
        ids = _read_lines(os.path.join(base, f"modelnet40_{split}.txt"))
        index = {n: i for i, n in enumerate(self.class_names)}
        files, labels = [], []
        for shape_id in ids:
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in index:
                raise ValueError(
                    f"{os.path.join(base, f'modelnet40_{split}.txt')}: id {shape_id!r} has class "
                    f"{cls!r} not in modelnet40_shape_names.txt"
                )
            files.append(os.path.join(base, cls, shape_id + ".txt"))
            labels.append(index[cls])
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(
                f"{base}: {len(missing)} listed shape file(s) missing, e.g. {missing[:3]}"
            )
        self._files = files
        self._init_arrays(files, np.array(labels, dtype=np.int64), base, [])

    def _load(self, index: int) -> np.ndarray:
        if self._files is None:
            return self._clouds[index]
        path = self._files[index]
        try:
            arr = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{path}: cannot parse 'x,y,z,nx,ny,nz' lines ({err})") from err
        if arr.shape[1] < 3:
            raise ValueError(f"{path}: expected at least 3 comma-separated columns, got {arr.shape[1]}")
        return arr[:, :3]

    def _source(self, index: int) -> str:
        return self._files[index] if self._files is not None else super()._source(index)

    def _cache_key(self, index: int) -> str | None:
        if self._files is not None:
            return file_signature(self._files[index])
        return super()._cache_key(index)


# --------------------------------------------------------------------------- h5 / ScanObjectNN


def _decode_names(value) -> list[str]:
    """Class names stored as an h5 string array or a JSON list string."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        value = parsed if isinstance(parsed, list) else [value]
    flat = np.asarray(value, dtype=object).reshape(-1).tolist()
    return [v.decode() if isinstance(v, bytes) else str(v) for v in flat]


class H5PointClouds(_ArrayBacked):
    """Any h5 file with ``data`` (M, N, >=3) and ``label`` (M,) or (M, 1).

    Class names come from ``class_names=``, else the file's ``class_names`` attribute or
    dataset, else ``class_0 ...``.  A file whose labels are all ``-1`` is unlabeled.
    Default ``normalize=False`` (the ScanObjectNN protocol feeds points as stored).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_points: int,
        *,
        class_names: Sequence[str] | None = None,
        train: bool = False,
        **kwargs,
    ) -> None:
        kwargs.setdefault("normalize", False)
        super().__init__(num_points, train=train, **kwargs)
        import h5py

        path = os.fspath(path)
        self.path = path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: h5 file not found")
        try:
            with h5py.File(path, "r") as f:
                for key in ("data", "label"):
                    if key not in f:
                        raise ValueError(
                            f"{path}: missing h5 dataset '{key}' (found keys {sorted(f.keys())})"
                        )
                data = f["data"][()]
                labels = f["label"][()]
                names = None
                if "class_names" in f.attrs:
                    names = _decode_names(f.attrs["class_names"])
                elif "class_names" in f:
                    names = _decode_names(f["class_names"][()])
        except OSError as err:
            raise ValueError(f"{path}: not a readable h5 file ({err})") from err
        if data.ndim != 3 or data.shape[2] < 3 or data.dtype.kind not in "fiu":
            raise ValueError(f"{path}: 'data' must be (M, N, 3) numbers, got {data.shape} {data.dtype}")
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
            raise ValueError(f"{path}: 'label' must be (M,) with M={data.shape[0]}, got shape {labels.shape}")
        if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
            raise ValueError(f"{path}: 'label' holds non-integer values")
        labels = labels.astype(np.int64)
        xyz = np.ascontiguousarray(data[:, :, :3], dtype=np.float32)
        _check_finite(xyz, f"{path} 'data'")
        if class_names is not None:
            names = list(class_names)
        unlabeled = labels.size > 0 and bool((labels == -1).all())
        if unlabeled:
            self.class_names, self.num_classes = [], 0
        else:
            if names is None:
                names = [f"class_{i}" for i in range(int(labels.max()) + 1 if labels.size else 0)]
            self.class_names, self.num_classes = list(names), len(names)
            _check_labels(labels, self.num_classes, path)
        self._init_arrays(xyz, labels, path, _file_item_keys(path, len(xyz)))


class ScanObjectNN(H5PointClouds):
    """ScanObjectNN by variant: ``OBJ_BG``, ``OBJ_ONLY`` or ``PB_T50_RS``.

    Files under ``root`` (the ``h5_files`` folder or its parent): OBJ_BG
    ``main_split/{training,test}_objectdataset.h5``, OBJ_ONLY ``main_split_nobg/`` (same
    names), PB_T50_RS ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``.
    15 classes; points as stored (no normalisation), as in the reference.
    """

    def __init__(
        self, root: str | os.PathLike[str], variant: str, split: str, num_points: int, **kwargs
    ) -> None:
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(f"variant must be one of {list(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be one of ['train', 'test'], got {split!r}")
        root = os.fspath(root)
        sub, stem = SCANOBJECTNN_VARIANTS[variant]
        fname = os.path.join(sub, f"{'training' if split == 'train' else 'test'}_{stem}.h5")
        paths = [os.path.join(root, fname), os.path.join(root, "h5_files", fname)]
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            raise FileNotFoundError(
                f"{paths[0]}: ScanObjectNN {variant} {split} file not found (also looked at {paths[1]}); "
                "expected h5 keys 'data' (M, 2048, 3) and 'label' (M,)"
            )
        kwargs.setdefault("train", split == "train")
        kwargs.setdefault("class_names", SCANOBJECTNN_CLASSES)
        super().__init__(path, num_points, **kwargs)
        self.variant, self.split = variant, split


# --------------------------------------------------------------------------- few-shot


class ModelNetFewShot(_ArrayBacked):
    """ModelNet40 few-shot folds: ``root/{way}way_{shot}shot/{fold}.pkl``.

    Each pickle is a dict with ``'train'`` and ``'test'`` lists of
    ``(points 8192x6, label, original class)``; read with the restricted unpickler.
    ``class_names`` are the original ModelNet40 names of each episode label when known.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        way: int,
        shot: int,
        fold: int,
        split: str,
        num_points: int,
        **kwargs,
    ) -> None:
        kwargs.setdefault("train", split == "train")
        super().__init__(num_points, **kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"split must be one of ['train', 'test'], got {split!r}")
        root = os.fspath(root)
        path = os.path.join(root, f"{way}way_{shot}shot", f"{fold}.pkl")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: few-shot fold not found (layout: <root>/<way>way_<shot>shot/<fold>.pkl)"
            )
        obj = safe_load_pickle(path)
        if not isinstance(obj, dict) or split not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{path}: expected a dict with 'train' and 'test' lists, got {keys}")
        items = obj[split]
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError(f"{path}: '{split}' must be a non-empty list of (points, label, class)")
        clouds, labels, originals = [], [], {}
        for i, item in enumerate(items):
            if not isinstance(item, (list, tuple)) or len(item) < 2:
                raise ValueError(f"{path}: '{split}' entry {i} is not a (points, label, class) tuple")
            pts = np.asarray(item[0])
            if pts.ndim != 2 or pts.shape[1] < 3 or pts.dtype.kind not in "fiu":
                raise ValueError(
                    f"{path}: '{split}' entry {i} points have shape {pts.shape}, expected (N, 6)"
                )
            clouds.append(np.ascontiguousarray(pts[:, :3], dtype=np.float32))
            _check_finite(clouds[-1], f"{path} ('{split}' entry {i})")
            lab = int(np.asarray(item[1]).reshape(-1)[0])
            labels.append(lab)
            if len(item) > 2:
                originals.setdefault(lab, np.asarray(item[2]).reshape(-1)[0].item())
        labels_arr = np.array(labels, dtype=np.int64)
        _check_labels(labels_arr, int(way), path)
        self.num_classes = int(way)
        self.class_names = [self._name(originals.get(j, j)) for j in range(self.num_classes)]
        self.root, self.way, self.shot, self.fold, self.split = root, way, shot, fold, split
        self._init_arrays(clouds, labels_arr, path, _file_item_keys(path, len(clouds), split))

    @staticmethod
    def _name(original) -> str:
        if isinstance(original, (int, np.integer)) and 0 <= int(original) < len(MODELNET40_CLASSES):
            return MODELNET40_CLASSES[int(original)]
        return original.decode() if isinstance(original, bytes) else str(original)


# --------------------------------------------------------------------------- ShapeNetPart


class ShapeNetPart(PointCloudDataset):
    """ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``).

    ``root/<synset>/<id>.txt`` rows ``x y z nx ny nz part`` and
    ``root/train_test_split/shuffled_{train,val,test}_file_list.json`` (entries
    ``shape_data/<synset>/<id>``).  ``split="train"`` is train + val (the usual protocol),
    ``"val"`` and ``"test"`` as listed.  ``label`` is the category index (16);
    ``seg`` the global part id (50).  Default sampling ``"random"`` with resampling for
    shapes with fewer points (as in the reference).
    """

    _seg = True
    _cache_raw = True
    num_parts = 50

    def __init__(self, root: str | os.PathLike[str], split: str, num_points: int, **kwargs) -> None:
        kwargs.setdefault("train", split == "train")
        kwargs.setdefault("sampling", "random")
        kwargs.setdefault("resample", True)
        super().__init__(num_points, **kwargs)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be one of ['train', 'val', 'test'], got {split!r}")
        root = os.fspath(root)
        nested = os.path.join(root, "shapenetcore_partanno_segmentation_benchmark_v0_normal")
        if not os.path.isdir(os.path.join(root, "train_test_split")) and os.path.isdir(nested):
            root = nested
        split_dir = os.path.join(root, "train_test_split")
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(
                f"{split_dir}: not found; expected ShapeNetPart layout <root>/<synset>/<id>.txt + "
                "train_test_split/shuffled_{train,val,test}_file_list.json"
            )
        self.categories = list(SHAPENETPART_CATEGORIES)
        self.class_names = list(self.categories)
        self.num_classes = len(self.categories)
        self.category_parts = {c: list(p) for c, (_, p) in SHAPENETPART_CATEGORIES.items()}
        synset_to_cat = {s: i for i, (s, _) in enumerate(SHAPENETPART_CATEGORIES.values())}
        self.files: list[str] = []
        cats: list[int] = []
        for s in (["train", "val"] if split == "train" else [split]):
            jpath = os.path.join(split_dir, f"shuffled_{s}_file_list.json")
            if not os.path.isfile(jpath):
                raise FileNotFoundError(f"{jpath}: split list not found")
            try:
                with open(jpath, encoding="utf-8") as f:
                    entries = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{jpath}: not valid JSON ({err})") from err
            if not isinstance(entries, list):
                raise ValueError(f"{jpath}: expected a JSON list of 'shape_data/<synset>/<id>' entries")
            for e in entries:
                parts = str(e).strip("/").split("/")
                if len(parts) < 2 or parts[-2] not in synset_to_cat:
                    raise ValueError(
                        f"{jpath}: entry {e!r} is not 'shape_data/<synset>/<id>' with a known synset"
                    )
                self.files.append(os.path.join(root, parts[-2], parts[-1] + ".txt"))
                cats.append(synset_to_cat[parts[-2]])
        missing = [p for p in self.files if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{root}: {len(missing)} listed shape file(s) missing, e.g. {missing[:3]}"
            )
        self._cats = np.array(cats, dtype=np.int64)
        self.root, self.split = root, split

    def __len__(self) -> int:
        return len(self.files)

    def _label(self, index: int) -> int:
        return int(self._cats[index])

    @property
    def labels(self) -> np.ndarray:
        return self._cats.copy()

    def _source(self, index: int) -> str:
        return self.files[index]

    def _cache_key(self, index: int) -> str | None:
        return file_signature(self.files[index])

    def _load(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            arr = np.loadtxt(path, dtype=np.float32, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{path}: cannot parse 'x y z nx ny nz part' rows ({err})") from err
        if arr.shape[0] == 0 or arr.shape[1] < 7:
            raise ValueError(
                f"{path}: expected rows of 7 columns (x y z nx ny nz part), got shape {arr.shape}"
            )
        part = arr[:, 6]
        allowed = np.array(self.category_parts[self.categories[self._cats[index]]])
        bad = ~np.isin(part, allowed)
        if bad.any():
            raise ValueError(
                f"{path}: part label {part[bad][0]:g} is not a part of {self.categories[self._cats[index]]} "
                f"(allowed {allowed.tolist()})"
            )
        return np.concatenate([arr[:, :3], part[:, None]], axis=1)
