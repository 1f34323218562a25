"""Shape classifier on the student backbone (ACT_SPEC §3).

Head input is the backbone's global descriptor [cls output ‖ max over patch outputs] (2D).
Modes:

- ``"full"``: the whole model trains; head ``cls_head_finetune`` = Linear 2D→256, BN, ReLU,
  Dropout 0.5, Linear 256→256, BN, ReLU, Dropout 0.5, Linear 256→classes (indices
  0,1,2,3,4,5,6,7,8, so the reference keys ``cls_head_finetune.{0,1,4,5,8}`` map directly).
- ``"mlp3"``: the same head, backbone frozen.
- ``"linear"``: ``cls_head_finetune.0`` = one Linear 2D→classes, backbone frozen.

A frozen backbone gets no gradient and stays in eval mode (batch-norm statistics and
dropout fixed) even when the classifier is put in train mode. (The reference's mlp-3 and
linear modes keep ``cls_token``/``cls_pos`` trainable and the backbone in train mode; act3d
freezes the backbone whole.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from act3d.models.student import (
    EncoderConfig,
    LoadReport,
    PointEncoder,
    init_weights,
    load_encoder_state,
)

__all__ = ["CLASSIFIER_MODES", "PointClassifier"]

CLASSIFIER_MODES = ("full", "mlp3", "linear")


def _mlp_head(in_dim: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class PointClassifier(nn.Module):
    """Student backbone + classification head.

    Args:
        encoder: backbone size (``num_groups`` 64 for 1k points, 128 for ScanObjectNN).
        num_classes: output classes.
        mode: ``"full"``, ``"mlp3"`` or ``"linear"`` (see the module docstring).
        head_hidden: hidden width of the MLP head.
        head_dropout: dropout of the MLP head.
    """

    def __init__(
        self,
        encoder: EncoderConfig,
        num_classes: int,
        mode: str = "full",
        head_hidden: int = 256,
        head_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if mode not in CLASSIFIER_MODES:
            raise ValueError(f"unknown mode {mode!r}; valid choices: {list(CLASSIFIER_MODES)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.mode = mode
        self.num_classes = num_classes
        self.backbone = PointEncoder(encoder)
        in_dim = self.backbone.out_dim
        if mode == "linear":
            self.cls_head_finetune = nn.Sequential(nn.Linear(in_dim, num_classes))
        else:
            self.cls_head_finetune = _mlp_head(in_dim, head_hidden, num_classes, head_dropout)
        self.cls_head_finetune.apply(init_weights)
        if self.backbone_frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @property
    def backbone_frozen(self) -> bool:
        """True in ``"mlp3"`` and ``"linear"`` modes."""
        return self.mode != "full"

    def train(self, mode: bool = True) -> PointClassifier:
        """Set train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def features(self, points: Tensor) -> Tensor:
        """points: (B, N, 3) -> backbone descriptor (B, 2D) = [cls ‖ max]."""
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone(points)
        return self.backbone(points)

    def forward(self, points: Tensor) -> Tensor:
        """points: (B, N, 3) -> logits (B, num_classes)."""
        return self.cls_head_finetune(self.features(points))

    def load_backbone(self, state_dict: Mapping[str, Tensor], strict: bool = True) -> LoadReport:
        """Load backbone weights (keys of :class:`PointEncoder`, e.g. from
        :func:`act3d.models.mpm.export_backbone`), checking every key.

        Raises:
            ValueError: shape mismatch, or (strict) any missing/unexpected key, listed.
        """
        return load_encoder_state(self.backbone, state_dict, strict=strict, source="backbone state")
