"""Headless PNG pictures (matplotlib, Agg canvas; no display needed).

A flat module of plotting functions.  Point clouds are y-up (ShapeNet/ModelNet/ScanObjectNN
convention): renders put y on the vertical axis and colour points by height.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["CATEGORY_COLOURS", "render_clouds"]

# A categorical palette (matplotlib's tab10) for points coloured by an integer label
# (part, class); label i gets colour i mod 10.
CATEGORY_COLOURS = np.array([
    (0.12, 0.47, 0.71), (1.00, 0.50, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.40, 0.74),
    (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.50, 0.50, 0.50), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81),
])  # fmt: skip


def _to_numpy(cloud) -> np.ndarray:
    if hasattr(cloud, "detach"):
        cloud = cloud.detach().cpu().numpy()
    arr = np.asarray(cloud, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"each cloud must have shape (N, 3), got {arr.shape}")
    return arr[:, :3]


def render_clouds(
    clouds: Sequence,
    titles: Sequence[str] | None,
    path: str | os.PathLike[str],
    *,
    ncols: int | None = None,
    point_size: float = 2.0,
    elev: float = 20.0,
    azim: float = -60.0,
    up_axis: int = 1,
    cmap: str = "viridis",
    panel_size: float = 2.6,
    dpi: int = 110,
    suptitle: str | None = None,
    labels: Sequence | None = None,
) -> str:
    """Render point clouds as a grid of 3D scatter plots and save a PNG.

    Args:
        clouds: sequence of (N, 3) arrays or tensors (N may differ per cloud).
        titles: one title per cloud (e.g. class names), or ``None``.
        labels: per cloud, (N,) non-negative integer labels (e.g. parts): points coloured by
            label with :data:`CATEGORY_COLOURS` instead of by height; ``None``: by height.
        path: output PNG path (parent folders are created).
        ncols: grid columns (default ``ceil(sqrt(len(clouds)))``).
        point_size: scatter marker size.
        elev, azim: camera elevation/azimuth in degrees.
        up_axis: which coordinate is "up" (1 = y, the dataset convention; 2 = z).
        cmap: matplotlib colour map for height.
        panel_size: inches per panel.
        dpi: resolution.
        suptitle: optional figure title.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(clouds) == 0:
        raise ValueError("render_clouds needs at least one cloud")
    if titles is not None and len(titles) != len(clouds):
        raise ValueError(f"got {len(titles)} titles for {len(clouds)} clouds")
    if labels is not None and len(labels) != len(clouds):
        raise ValueError(f"got {len(labels)} label arrays for {len(clouds)} clouds")
    if up_axis not in (0, 1, 2):
        raise ValueError(f"up_axis must be 0, 1 or 2, got {up_axis}")
    arrays = [_to_numpy(c) for c in clouds]
    n = len(arrays)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    # room above the top row for the suptitle and for titles of more than one line
    extra_lines = max((str(t).count("\n") for t in titles), default=0) if titles is not None else 0
    head = (0.4 if suptitle else 0.0) + 0.25 * extra_lines  # inches
    fig_height = panel_size * nrows + head
    fig = Figure(figsize=(panel_size * ncols, fig_height))
    FigureCanvasAgg(fig)
    # matplotlib's 3D axes are z-up: plot (horizontal a, horizontal b, up)
    horiz = [a for a in (0, 1, 2) if a != up_axis]
    order = (horiz[1], horiz[0], up_axis) if up_axis == 1 else (horiz[0], horiz[1], up_axis)
    for k, pts in enumerate(arrays):
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        if len(pts):
            x, y, z = pts[:, order[0]], pts[:, order[1]], pts[:, order[2]]
            if labels is None:
                ax.scatter(x, y, z, c=z, cmap=cmap, s=point_size, linewidths=0, depthshade=True)
            else:
                lab = labels[k].detach().cpu().numpy() if hasattr(labels[k], "detach") else labels[k]
                lab = np.asarray(lab).astype(np.int64).reshape(-1)
                if lab.shape != (len(pts),) or (lab < 0).any():
                    raise ValueError(f"labels[{k}] must be {len(pts)} non-negative integers, got shape {lab.shape}")
                colours = CATEGORY_COLOURS[lab % len(CATEGORY_COLOURS)]
                ax.scatter(x, y, z, c=colours, s=point_size, linewidths=0, depthshade=True)
            centre = (pts.max(axis=0) + pts.min(axis=0)) / 2
            half = max(float((pts.max(axis=0) - pts.min(axis=0)).max()) / 2, 1e-6)
            ax.set_xlim(centre[order[0]] - half, centre[order[0]] + half)
            ax.set_ylim(centre[order[1]] - half, centre[order[1]] + half)
            ax.set_zlim(centre[order[2]] - half, centre[order[2]] + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=9, pad=0)
    if suptitle:
        fig.suptitle(suptitle)
    top = 1.0 - (0.03 * panel_size * nrows + head) / fig_height
    fig.subplots_adjust(left=0, right=1, bottom=0, top=top, wspace=0.0, hspace=0.08 + 0.06 * extra_lines)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
