"""Headless PNG pictures (matplotlib, Agg canvas; no display needed).

A flat module of plotting functions.  Point clouds are y-up (ShapeNet/ModelNet/ScanObjectNN
convention): renders put y on the vertical axis and colour points by height.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["render_clouds"]


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
) -> str:
    """Render point clouds as a grid of 3D scatter plots and save a PNG.

    Args:
        clouds: sequence of (N, 3) arrays or tensors (N may differ per cloud).
        titles: one title per cloud (e.g. class names), or ``None``.
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
    if up_axis not in (0, 1, 2):
        raise ValueError(f"up_axis must be 0, 1 or 2, got {up_axis}")
    arrays = [_to_numpy(c) for c in clouds]
    n = len(arrays)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows + (0.4 if suptitle else 0.0)))
    FigureCanvasAgg(fig)
    # matplotlib's 3D axes are z-up: plot (horizontal a, horizontal b, up)
    horiz = [a for a in (0, 1, 2) if a != up_axis]
    order = (horiz[1], horiz[0], up_axis) if up_axis == 1 else (horiz[0], horiz[1], up_axis)
    for k, pts in enumerate(arrays):
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        if len(pts):
            x, y, z = pts[:, order[0]], pts[:, order[1]], pts[:, order[2]]
            ax.scatter(x, y, z, c=z, cmap=cmap, s=point_size, linewidths=0, depthshade=True)
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
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.93 if suptitle else 0.97, wspace=0.0, hspace=0.08)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
