"""Headless PNG plots for evaluation: confusion matrices and t-SNE maps of embeddings.

Drawn on matplotlib's Agg canvas without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_confusion", "plot_tsne", "tsne_2d"]


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi)
    return path


def plot_confusion(
    confusion: np.ndarray,
    class_names: Sequence[str] | None,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    normalize: bool = True,
) -> Path:
    """Draw a confusion matrix (rows ground truth, columns prediction) as a PNG.

    Args:
        confusion: (C, C) counts.
        class_names: C names (``None``: indices).
        path: the PNG file.
        title: figure title.
        normalize: colour by row share (per-class recall) instead of counts; the cells show
            counts either way when C <= 20.

    Returns:
        The path written.
    """
    conf = np.asarray(confusion, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be (C, C), got shape {conf.shape}")
    classes = conf.shape[0]
    names = [str(i) for i in range(classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != classes:
        raise ValueError(f"{len(names)} class names for a {classes}-class confusion matrix")
    shown = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1) if normalize else conf
    size = min(24.0, max(4.0, 0.35 * classes + 2.5))
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class" if normalize else "count")
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    font = 8 if classes <= 20 else 5
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if classes <= 20:
        for i in range(classes):
            for j in range(classes):
                if conf[i, j]:
                    colour = "white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black"
                    ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=6, color=colour)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def tsne_2d(features: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of (M, F) features (standardised first) -> (M, 2) float32.

    The perplexity is capped at ``(M - 1) / 3`` so small sets work; up to 300 points use the
    exact gradient (fast and thread-free at that size), more use Barnes-Hut.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"t-SNE needs (M, F) features with M >= 2, got shape {x.shape}")
    std = x.std(axis=0, keepdims=True)
    x = (x - x.mean(axis=0, keepdims=True)) / np.where(std > 1e-12, std, 1.0)
    perplexity = float(min(perplexity, max(1.0, (x.shape[0] - 1) / 3.0)))
    method = "exact" if x.shape[0] <= 300 else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", method=method, random_state=seed)
    return tsne.fit_transform(x).astype(np.float32)


def plot_tsne(
    features: np.ndarray,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "",
    seed: int = 0,
    perplexity: float = 30.0,
) -> Path:
    """Scatter a 2-D t-SNE of ``features`` (M, F), coloured by ``labels`` when given.

    Args:
        features: (M, F) embeddings.
        path: the PNG file.
        labels: (M,) integer labels (``None`` or all ``-1``: one colour).
        class_names: names of the labels for the legend.
        title: figure title.
        seed: t-SNE seed.
        perplexity: t-SNE perplexity (capped for small M).

    Returns:
        The path written.
    """
    xy = tsne_2d(features, seed=seed, perplexity=perplexity)
    fig = Figure(figsize=(7.5, 6.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    lab = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if lab is not None and lab.shape[0] != xy.shape[0]:
        raise ValueError(f"{lab.shape[0]} labels for {xy.shape[0]} features")
    if lab is None or (lab < 0).all():
        ax.scatter(xy[:, 0], xy[:, 1], s=8, c="tab:blue")
    else:
        classes = np.unique(lab[lab >= 0])
        cmap = "tab10" if len(classes) <= 10 else "tab20"
        from matplotlib import colormaps

        colours = colormaps[cmap]
        for k, c in enumerate(classes):
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            pick = lab == c
            ax.scatter(xy[pick, 0], xy[pick, 1], s=8, color=colours(k % colours.N), label=name)
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
