"""Embeddings of point clouds and meshes with a frozen student encoder.

Any file :mod:`act3d.data.io` reads (``.npy .npz .xyz .txt .pts .ply .off .obj .stl``) becomes
``num_points`` points: meshes are sampled uniformly by area (4x oversampled, then FPS),
clouds are reduced by FPS (from index 0); every cloud is then normalised (centroid
subtracted, max radius 1), as the training data. The encoder maps them to its global
descriptor [cls ‖ max over patches] (2D floats per input).

:func:`save_embeddings` writes the (M, 2D) float32 array as ``.npy`` and a JSON sidecar
(``<name>.json``) listing the inputs in row order (plus labels and class names when known).

Python::

    import act3d
    encoder = act3d.load_encoder("runs/pretrain-.../student.safetensors")
    feats, names = embed_files(encoder, ["chair.ply", "scans/"], num_points=1024)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from act3d.checkpoint import atomic_path
from act3d.data.io import SHAPE_EXTENSIONS, load_points

__all__ = [
    "embed_files",
    "embed_points",
    "expand_inputs",
    "labels_from_parents",
    "load_input_points",
    "save_embeddings",
]


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders replaced by the shape files below them (sorted).

    Raises:
        FileNotFoundError: an input that does not exist.
        ValueError: no shape file at all, or a file with an unsupported extension.
    """
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SHAPE_EXTENSIONS and not p.name.startswith(".")
            )  # fmt: skip
            out.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SHAPE_EXTENSIONS:
                raise ValueError(f"{path}: unsupported file type '{path.suffix}'; supported: {list(SHAPE_EXTENSIONS)}")
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not out:
        raise ValueError(f"no shape files ({', '.join(SHAPE_EXTENSIONS)}) among the inputs {list(map(str, inputs))}")
    return out


def _normalise(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred * centred).sum(axis=1)).max())
    return centred / radius if radius > 0 else centred


def load_input_points(paths: Sequence[str | os.PathLike[str]], num_points: int, *, seed: int = 0) -> np.ndarray:
    """Read every file as ``num_points`` normalised points -> (M, num_points, 3) float32.

    Meshes are area-sampled with a generator seeded by ``seed`` (the same file gives the
    same points); clouds with fewer than ``num_points`` points are an error naming the file.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    clouds = [_normalise(load_points(p, num_points, seed=seed, method="fps").astype(np.float64)) for p in paths]
    return np.stack(clouds).astype(np.float32)


@torch.no_grad()
def embed_points(encoder: nn.Module, points: np.ndarray | torch.Tensor, *, batch_size: int = 32) -> np.ndarray:
    """Encoder features of (M, N, 3) clouds -> (M, F) float32, batch by batch.

    The encoder runs in eval mode on its own device; its mode is restored afterwards.
    """
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32)) if not isinstance(points, torch.Tensor) else points
    if pts.ndim != 3 or pts.shape[-1] != 3:
        raise ValueError(f"points must be (M, N, 3), got {tuple(pts.shape)}")
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [encoder(pts[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(pts), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(parts).numpy().astype(np.float32)


def embed_files(
    encoder: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    num_points: int = 1024,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Embed files and folders of clouds/meshes.

    Returns:
        features (M, F) float32 and the M input file names in row order.
    """
    paths = expand_inputs(inputs)
    points = load_input_points(paths, num_points, seed=seed)
    return embed_points(encoder, points, batch_size=batch_size), [str(p) for p in paths]


def labels_from_parents(names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Labels from each file's parent folder name -> (labels (M,), class names sorted).

    All ``-1`` (and no names) when the files share one folder.
    """
    parents = [Path(n).parent.name for n in names]
    classes = sorted(set(parents))
    if len(classes) < 2:
        return np.full(len(names), -1, dtype=np.int64), []
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[p] for p in parents], dtype=np.int64), classes


def save_embeddings(
    features: np.ndarray,
    names: Sequence[str],
    out: str | os.PathLike[str],
    *,
    labels: np.ndarray | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``features`` to ``out`` (``.npy``, float32) and a JSON sidecar beside it.

    The sidecar ``<out without .npy>.json`` holds ``{"inputs": names, "shape": [M, F],
    "labels"?: [...], "class_names"?: [...], **meta}``.

    Returns:
        ``(npy path, json path)``.
    """
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(names):
        raise ValueError(f"features must be (M, F) with M = {len(names)} names, got shape {feats.shape}")
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    sidecar = out.with_suffix(".json")
    record: dict[str, Any] = {"inputs": [str(n) for n in names], "shape": list(feats.shape)}
    if labels is not None:
        record["labels"] = [int(v) for v in np.asarray(labels).reshape(-1)]
    if class_names is not None:
        record["class_names"] = list(class_names)
    record.update(dict(meta or {}))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, feats)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out, sidecar
