"""Per-point segmentation head on the student backbone (ACT_SPEC §3).

ShapeNetPart (16 categories, 50 parts, 2048 points, 128 groups)::

    feats   = backbone.intermediate_features(patches, centers, layers)   # (B, G, L*D)
    global  = [max_G feats ‖ mean_G feats ‖ category embedding]          # (B, 2*L*D [+ E])
    point   = propagation([xyz ‖ 3-NN interpolation of feats])           # (B, N, P1)
    logits  = head([point ‖ global])                                     # (B, N, parts)

With ``num_categories=0`` the category branch is absent, which is the scene (S3DIS)
segmentation head. The 3-NN interpolation weights are the inverse *squared* distances
(PointNet++ feature propagation, as in the reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from act3d.models.student import (
    EncoderConfig,
    LoadReport,
    PointEncoder,
    default_feature_layers,
    init_weights,
    load_encoder_state,
)
from act3d.ops import gather_points, knn

__all__ = ["PartSegmentationModel", "interpolate_features"]


def interpolate_features(
    query: Tensor, centers: Tensor, features: Tensor, k: int = 3, eps: float = 1e-8
) -> Tensor:
    """Inverse-distance interpolation of center features onto query points.

    Each query point averages the features of its ``k`` nearest centers with weights
    ``1 / (d² + eps)`` normalised to sum to 1 (``d²`` the squared distance).

    Args:
        query: (B, N, 3) points to interpolate to.
        centers: (B, G, 3) where the features live.
        features: (B, G, C).
        k: neighbours (capped at G).
        eps: added to squared distances.

    Returns:
        (B, N, C).
    """
    if centers.shape[:2] != features.shape[:2]:
        raise ValueError(
            f"centers (B, G, 3) {tuple(centers.shape)} and features (B, G, C) "
            f"{tuple(features.shape)} must agree on B and G"
        )
    k = min(k, centers.shape[1])
    dist2, idx = knn(query, centers, k)  # (B, N, k)
    weight = 1.0 / (dist2 + eps)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    neighbours = gather_points(features, idx)  # (B, N, k, C)
    return (neighbours * weight.unsqueeze(-1)).sum(dim=2)


def _conv_bn_relu(in_dim: int, out_dim: int) -> list[nn.Module]:
    return [nn.Conv1d(in_dim, out_dim, 1), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]


class PartSegmentationModel(nn.Module):
    """Student backbone + per-point segmentation head.

    Args:
        encoder: backbone size; ShapeNetPart uses ``num_groups=128`` (2048 points).
        num_parts: output classes per point (50 for ShapeNetPart, 13 for S3DIS).
        num_categories: object categories for the one-hot branch (16); 0 disables it.
        layers: backbone blocks whose features are used (0-based); None gives
            :func:`~act3d.models.student.default_feature_layers` ((3, 7, 11) for 12 blocks).
        with_cls_token: run the backbone with its cls token (the reference's segmentation
            model runs without one).
        category_dim: width of the category embedding.
        propagation_dims: widths of the two propagation convs; None gives (4D, 1024).
        head_dims: widths of the two hidden convs of the final head.
        dropout: dropout after the first head conv.
    """

    def __init__(
        self,
        encoder: EncoderConfig,
        num_parts: int = 50,
        num_categories: int = 16,
        layers: Sequence[int] | None = None,
        with_cls_token: bool = False,
        category_dim: int = 64,
        propagation_dims: tuple[int, int] | None = None,
        head_dims: tuple[int, int] = (512, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"num_parts must be positive, got {num_parts}")
        if num_categories < 0:
            raise ValueError(f"num_categories must be >= 0, got {num_categories}")
        self.backbone = PointEncoder(encoder)
        self.layers = default_feature_layers(encoder.depth) if layers is None else tuple(layers)
        if not self.layers or any(not 0 <= i < encoder.depth for i in self.layers):
            raise ValueError(f"layers must be block indices in [0, {encoder.depth}), got {layers}")
        self.with_cls_token = with_cls_token
        self.num_parts = num_parts
        self.num_categories = num_categories
        feat_dim = len(self.layers) * encoder.embed_dim
        if propagation_dims is None:
            propagation_dims = (4 * encoder.embed_dim, 1024)
        if num_categories > 0:
            self.category_embed: nn.Sequential | None = nn.Sequential(
                nn.Linear(num_categories, category_dim, bias=False),
                nn.BatchNorm1d(category_dim),
                nn.LeakyReLU(0.2),
            )
            global_dim = 2 * feat_dim + category_dim
        else:
            self.category_embed = None
            global_dim = 2 * feat_dim
        self.propagation = nn.Sequential(
            *_conv_bn_relu(feat_dim + 3, propagation_dims[0]),
            *_conv_bn_relu(propagation_dims[0], propagation_dims[1]),
        )
        self.head = nn.Sequential(
            *_conv_bn_relu(propagation_dims[1] + global_dim, head_dims[0]),
            nn.Dropout(dropout),
            *_conv_bn_relu(head_dims[0], head_dims[1]),
            nn.Conv1d(head_dims[1], num_parts, 1),
        )
        for module in (self.category_embed, self.propagation, self.head):
            if module is not None:
                module.apply(init_weights)

    def patch_features(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points: (B, N, 3) -> (centers (B, G, 3), features (B, G, L*D))."""
        patches, centers = self.backbone.group(points)
        feats = self.backbone.intermediate_features(
            patches, centers, self.layers, with_cls_token=self.with_cls_token
        )
        return centers, feats

    def forward(self, points: Tensor, category: Tensor | None = None) -> Tensor:
        """Per-point logits.

        Args:
            points: (B, N, 3).
            category: (B,) int64 object category, required iff ``num_categories > 0``.

        Returns:
            (B, N, num_parts) logits.
        """
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
        batch, num_points, _ = points.shape
        centers, feats = self.patch_features(points)  # (B, G, 3), (B, G, F)
        pooled = [feats.amax(dim=1), feats.mean(dim=1)]  # 2 x (B, F)
        if self.category_embed is not None:
            if category is None or tuple(category.shape) != (batch,):
                shape = None if category is None else tuple(category.shape)
                raise ValueError(f"category must be a (B,) = ({batch},) int tensor, got {shape}")
            if bool(((category < 0) | (category >= self.num_categories)).any()):
                raise ValueError(f"category values must be in [0, {self.num_categories})")
            one_hot = F.one_hot(category.long(), self.num_categories).to(feats.dtype)
            pooled.append(self.category_embed(one_hot))
        elif category is not None:
            raise ValueError(
                "category given but the model has no category branch (num_categories=0)"
            )
        global_feat = torch.cat(pooled, dim=-1)  # (B, Fg)
        upsampled = interpolate_features(points, centers, feats)  # (B, N, F)
        point_feat = self.propagation(torch.cat([points, upsampled], dim=-1).transpose(1, 2))
        global_feat = global_feat.unsqueeze(-1).expand(-1, -1, num_points)  # (B, Fg, N)
        logits = self.head(torch.cat([point_feat, global_feat], dim=1))  # (B, P, N)
        return logits.transpose(1, 2)

    def load_backbone(self, state_dict: Mapping[str, Tensor], strict: bool = True) -> LoadReport:
        """Load backbone weights (keys of :class:`PointEncoder`), checking every key.

        Raises:
            ValueError: shape mismatch, or (strict) any missing/unexpected key, listed.
        """
        return load_encoder_state(self.backbone, state_dict, strict=strict, source="backbone state")
