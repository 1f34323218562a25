"""Point-cloud data: on-disk formats, the synthetic shape world, transforms, import.

See ``docs/architecture.md``: samples are dicts ``{"points": float32 (N, 3), "label": int64 ()}``
(unlabeled: ``-1``; part segmentation adds ``"seg": int64 (N,)``); :func:`build_dataset`
parses a SOURCE string (see :mod:`act3d.data.sources`).

Names are imported lazily (PEP 562), so ``act3d.data.cli`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, str]] = {
    "build_dataset": ("sources", "build_dataset"),
    "parse_source": ("sources", "parse_source"),
    "is_synthetic": ("sources", "is_synthetic"),
    "SOURCE_KINDS": ("sources", "SOURCE_KINDS"),
    "PointCloudDataset": ("datasets", "PointCloudDataset"),
    "ShapeNet55": ("datasets", "ShapeNet55"),
    "ModelNet40": ("datasets", "ModelNet40"),
    "H5PointClouds": ("datasets", "H5PointClouds"),
    "ScanObjectNN": ("datasets", "ScanObjectNN"),
    "ModelNetFewShot": ("datasets", "ModelNetFewShot"),
    "ShapeNetPart": ("datasets", "ShapeNetPart"),
    "MODELNET40_CLASSES": ("datasets", "MODELNET40_CLASSES"),
    "SCANOBJECTNN_CLASSES": ("datasets", "SCANOBJECTNN_CLASSES"),
    "SCANOBJECTNN_VARIANTS": ("datasets", "SCANOBJECTNN_VARIANTS"),
    "SHAPENETPART_CATEGORIES": ("datasets", "SHAPENETPART_CATEGORIES"),
    "PointFolder": ("folder", "PointFolder"),
    "discover_shapes": ("folder", "discover_shapes"),
    "SyntheticShapes": ("synthetic", "SyntheticShapes"),
    "SyntheticParts": ("synthetic", "SyntheticParts"),
    "generate_shapes": ("synthetic", "generate_shapes"),
    "SYNTHETIC_CLASSES": ("synthetic", "CLASSES"),
    "import_folder": ("importer", "import_folder"),
    "ImportReport": ("importer", "ImportReport"),
    "Shape": ("io", "Shape"),
    "read_shape": ("io", "read_shape"),
    "load_points": ("io", "load_points"),
    "sample_surface": ("io", "sample_surface"),
    "safe_load_pickle": ("safe_pickle", "safe_load_pickle"),
    "UnsafePickleError": ("safe_pickle", "UnsafePickleError"),
    "Transform": ("transforms", "Transform"),
    "Normalize": ("transforms", "Normalize"),
    "ScaleTranslate": ("transforms", "ScaleTranslate"),
    "RotateUp": ("transforms", "RotateUp"),
    "Jitter": ("transforms", "Jitter"),
    "RandomPointDropout": ("transforms", "RandomPointDropout"),
    "Compose": ("transforms", "Compose"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'act3d.data' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(f"act3d.data.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
