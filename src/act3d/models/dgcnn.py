"""DGCNN over patch centers (ACT_SPEC §1.1), the tokenizer and latent mixer of Stage I.

Each patch is a graph node at its center; its neighbours are the ``k`` nearest centers
(itself included, distance 0). One EdgeConv layer builds, for node ``i`` and neighbour
``j``, the edge feature ``[f_j - f_i ‖ f_i]``, runs a shared bias-free 1×1 convolution,
GroupNorm(4) and LeakyReLU(0.2), and takes the max over the ``k`` neighbours.

Layout (parameter names as in the reference, so its Stage I weights map 1:1):

- ``input_trans``: Conv1d in_dim→128 (with bias);
- ``layer1..layer4``: EdgeConv with outputs 256, 512, 512, 1024 (inputs 2·128, 2·256,
  2·512, 2·512), each ``Sequential(Conv2d, GroupNorm(4), LeakyReLU(0.2))``;
- ``layer5``: the concatenation of the four outputs (2304) → Conv1d (bias-free) → out_dim,
  GroupNorm(4), LeakyReLU(0.2).

``widths`` can shrink the four EdgeConv widths (tiny test/demo models); ``input_trans``
then maps to ``widths[0] // 2``. The default is the reference's.

The forward pass uses the identity ``W·[f_j − f_i ‖ f_i] = W_a·f_j + (W_b − W_a)·f_i``
(``W = [W_a ‖ W_b]``, the 1×1 conv weight): two per-node projections, then a gather, instead
of a convolution over every edge (k times fewer multiply-adds). :meth:`DGCNN.forward_naive`
convolves the explicit edge features (:func:`edge_features`) and is the plain reference.

The head keeps the reference's GroupNorm + LeakyReLU even when its output is used as
codebook logits: that is what the reference trains, and softmax over codes only needs
*some* real-valued scores. ``out_dim`` must therefore be divisible by 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from act3d.ops import gather_points, knn

__all__ = ["DGCNN", "edge_features"]

_WIDTHS = (256, 512, 512, 1024)
_GROUPS = 4


def edge_features(features: Tensor, idx: Tensor) -> Tensor:
    """EdgeConv input ``[f_nbr - f ‖ f]``.

    Args:
        features: (B, N, C) node features.
        idx: (B, N, k) int64 neighbour indices into N.

    Returns:
        edges: (B, 2C, N, k) channel-first, ready for a 1×1 Conv2d.
    """
    nbr = gather_points(features, idx)  # (B, N, k, C)
    center = features.unsqueeze(2).expand_as(nbr)  # (B, N, k, C)
    return torch.cat([nbr - center, center], dim=-1).permute(0, 3, 1, 2)


def _edge_layer(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        nn.GroupNorm(_GROUPS, out_dim),
        nn.LeakyReLU(negative_slope=0.2),
    )


def _edge_conv(layer: nn.Sequential, features: Tensor, idx: Tensor) -> Tensor:
    """One EdgeConv layer via per-node projections: (B, N, C), (B, N, k) -> (B, W, N)."""
    conv, norm, act = layer
    C = features.shape[-1]
    weight = conv.weight.flatten(1)  # (W, 2C)
    w_nbr, w_self = weight[:, :C], weight[:, C:]
    nbr = F.linear(features, w_nbr)  # (B, N, W)
    own = F.linear(features, w_self - w_nbr)  # (B, N, W)
    edges = gather_points(nbr, idx) + own.unsqueeze(2)  # (B, N, k, W)
    return act(norm(edges.permute(0, 3, 1, 2))).amax(dim=-1)


class DGCNN(nn.Module):
    """Dynamic-graph CNN on patch tokens, with the graph fixed by the patch centers.

    Args:
        in_dim: input token width C_in.
        out_dim: output width (divisible by 4, for GroupNorm(4)).
        k: neighbours per center, the center itself included (4 in ACT).
        widths: output widths of the four EdgeConv layers, each a multiple of 4 (the first
            also even).
    """

    def __init__(
        self, in_dim: int, out_dim: int, k: int = 4, widths: Sequence[int] = _WIDTHS
    ) -> None:
        super().__init__()
        if in_dim <= 0:
            raise ValueError(f"in_dim must be positive, got {in_dim}")
        if out_dim <= 0 or out_dim % _GROUPS != 0:
            raise ValueError(f"out_dim must be a positive multiple of {_GROUPS}, got {out_dim}")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or any(w <= 0 or w % _GROUPS != 0 for w in widths):
            raise ValueError(f"widths must be 4 positive multiples of {_GROUPS}, got {widths}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.k = k
        self.widths = widths
        self.input_trans = nn.Conv1d(in_dim, widths[0] // 2, 1)
        widths_in = (widths[0] // 2,) + widths[:-1]
        self.layer1 = _edge_layer(2 * widths_in[0], widths[0])
        self.layer2 = _edge_layer(2 * widths_in[1], widths[1])
        self.layer3 = _edge_layer(2 * widths_in[2], widths[2])
        self.layer4 = _edge_layer(2 * widths_in[3], widths[3])
        self.layer5 = nn.Sequential(
            nn.Conv1d(sum(widths), out_dim, kernel_size=1, bias=False),
            nn.GroupNorm(_GROUPS, out_dim),
            nn.LeakyReLU(negative_slope=0.2),
        )

    def neighbours(self, centers: Tensor) -> Tensor:
        """Indices of the ``k`` nearest centers of each center (itself first).

        Args:
            centers: (B, G, 3).

        Returns:
            idx: (B, G, k) int64, ascending distance.
        """
        if centers.shape[1] < self.k:
            raise ValueError(f"DGCNN needs at least k={self.k} centers, got {centers.shape[1]}")
        with torch.no_grad():
            _, idx = knn(centers, centers, self.k)
        return idx

    def forward(self, features: Tensor, centers: Tensor) -> Tensor:
        """Mix each token with its neighbours'.

        Args:
            features: (B, G, in_dim) patch tokens.
            centers: (B, G, 3) patch centers (define the graph).

        Returns:
            out: (B, G, out_dim).
        """
        return self._run(features, centers, naive=False)

    def forward_naive(self, features: Tensor, centers: Tensor) -> Tensor:
        """Plain reference of :meth:`forward`: 1×1 Conv2d over explicit edge features."""
        return self._run(features, centers, naive=True)

    def _run(self, features: Tensor, centers: Tensor, naive: bool) -> Tensor:
        if features.ndim != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(
                f"features must be (B, G, {self.in_dim}), got {tuple(features.shape)}"
            )
        if centers.shape != features.shape[:2] + (3,):
            raise ValueError(
                f"centers must be {tuple(features.shape[:2]) + (3,)}, got {tuple(centers.shape)}"
            )
        idx = self.neighbours(centers)  # (B, G, k)
        f = self.input_trans(features.transpose(1, 2)).transpose(1, 2)  # (B, G, W0 / 2)
        outputs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            if naive:
                f = layer(edge_features(f, idx)).amax(dim=-1)  # (B, W, G)
            else:
                f = _edge_conv(layer, f, idx)  # (B, W, G)
            outputs.append(f)
            f = f.transpose(1, 2)  # (B, G, W)
        out = self.layer5(torch.cat(outputs, dim=1))  # (B, out_dim, G), sum(widths) in
        return out.transpose(1, 2)
