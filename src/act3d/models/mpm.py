"""Stage II: masked point modelling with a cross-modal teacher's targets (ACT_SPEC §2).

MAE-style, one stage per method::

    mask = random_mask(...)                       # (B, G) bool, True = masked
    visible = forward_encoder(patches, centers, mask)   # (B, V, D)
    pred = forward_decoder(visible, centers, mask)      # (B, M, C)
    loss = forward_loss(pred, target[mask])             # scalar

The student backbone is the submodule ``student`` (a :class:`PointEncoder`), so
``model.student.state_dict()`` — or :func:`export_backbone` — is the backbone to fine-tune.
Decoder names map to the reference with prefix changes: ``mask_token``,
``decoder_pos_embed``, ``decoder.{i}`` (reference ``ACT_decoder.blocks.{i}``),
``decoder_norm`` (``ACT_decoder.norm``), ``proj_head``.

Targets:
    ``"latent"``: the teacher's latent feature per patch (B, G, target_dim); the loss is
        the negative cosine similarity averaged over masked patches, ``-cos`` (the
        reference adds a constant 1, which changes no gradient).
    ``"points"``: Point-MAE style; the head predicts the k×3 points of each masked patch
        (patch-local) and the loss is CD-L2 averaged over masked patches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from act3d.models.blocks import Block, drop_path_rates
from act3d.models.patch_embed import PositionEmbed
from act3d.models.student import EncoderConfig, PointEncoder, _check_visible_mask
from act3d.ops import chamfer_distance, random_mask

__all__ = ["MPM_TARGETS", "MPMConfig", "MaskedPointModel", "export_backbone"]

MPM_TARGETS = ("latent", "points")


@dataclass(frozen=True)
class MPMConfig:
    """Stage II model configuration (defaults: the paper's).

    Attributes:
        encoder: the student backbone's size.
        mask_ratio: fraction of patches masked; exactly ``int(mask_ratio * G)`` per cloud.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads; None uses ``encoder.num_heads``.
        decoder_drop_path: largest decoder stochastic-depth rate.
        target: ``"latent"`` (teacher features, negative cosine) or ``"points"``
            (masked patch points, CD-L2).
        target_dim: width of the teacher's latent feature (ignored for ``"points"``).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask_ratio: float = 0.8
    decoder_depth: int = 2
    decoder_heads: int | None = None
    decoder_drop_path: float = 0.1
    target: str = "latent"
    target_dim: int = 384

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig):
            raise ValueError(
                f"MPMConfig.encoder must be an EncoderConfig, got {type(self.encoder).__name__}"
            )
        if self.target not in MPM_TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid choices: {list(MPM_TARGETS)}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"MPMConfig.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        masked = int(self.mask_ratio * self.encoder.num_groups)
        if not 0 < masked < self.encoder.num_groups:
            raise ValueError(
                f"mask_ratio {self.mask_ratio} masks {masked} of {self.encoder.num_groups} "
                "patches; at least one must be masked and one visible"
            )
        if self.decoder_depth <= 0:
            raise ValueError(f"MPMConfig.decoder_depth must be positive, got {self.decoder_depth}")
        if self.target_dim <= 0:
            raise ValueError(f"MPMConfig.target_dim must be positive, got {self.target_dim}")
        heads = self.num_decoder_heads
        if heads <= 0 or self.encoder.embed_dim % heads != 0:
            raise ValueError(
                f"decoder_heads ({heads}) must be positive and divide embed_dim "
                f"({self.encoder.embed_dim})"
            )

    @property
    def num_decoder_heads(self) -> int:
        """Decoder heads actually used."""
        return self.encoder.num_heads if self.decoder_heads is None else self.decoder_heads

    @property
    def output_dim(self) -> int:
        """Width of one prediction: target_dim, or k*3 for ``"points"``."""
        return self.encoder.group_size * 3 if self.target == "points" else self.target_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the encoder nested)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MPMConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown MPMConfig keys {unknown}; valid keys: {sorted(valid)}")
        values = dict(values)
        if isinstance(values.get("encoder"), Mapping):
            values["encoder"] = EncoderConfig.from_dict(values["encoder"])
        return cls(**values)


def _xavier_linear(module: nn.Module) -> None:
    """Decoder init of the reference: Xavier-uniform Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _select(values: Tensor, mask: Tensor) -> Tensor:
    """Rows of ``values`` (B, G, ...) where ``mask`` (B, G) is True -> (B, M, ...)."""
    batch = values.shape[0]
    return values[mask].reshape(batch, -1, *values.shape[2:])


class MaskedPointModel(nn.Module):
    """Student encoder + light decoder predicting the masked patches' targets.

    Args:
        config: see :class:`MPMConfig`.
    """

    def __init__(self, config: MPMConfig | None = None) -> None:
        super().__init__()
        config = MPMConfig() if config is None else config
        if not isinstance(config, MPMConfig):
            raise ValueError(f"config must be an MPMConfig, got {type(config).__name__}")
        self.config = config
        dim = config.encoder.embed_dim
        self.student = PointEncoder(config.encoder)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = PositionEmbed(dim)
        self.decoder = nn.ModuleList(
            Block(
                dim,
                config.num_decoder_heads,
                mlp_ratio=config.encoder.mlp_ratio,
                qkv_bias=config.encoder.qkv_bias,
                drop_path=rate,
                norm_eps=config.encoder.norm_eps,
            )
            for rate in drop_path_rates(config.decoder_drop_path, config.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=config.encoder.norm_eps)
        self.proj_head = nn.Linear(dim, config.output_dim)
        self.decoder.apply(_xavier_linear)
        self.decoder_norm.apply(_xavier_linear)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def random_mask(
        self, batch: int, generator: torch.Generator | None = None, device: Any = None
    ) -> Tensor:
        """Random mask (B, G) bool with exactly ``int(mask_ratio * G)`` True per row."""
        return random_mask(
            batch,
            self.config.encoder.num_groups,
            self.config.mask_ratio,
            generator=generator,
            device=device,
        )

    def forward_encoder(self, patches: Tensor, centers: Tensor, mask: Tensor) -> Tensor:
        """Encode the visible patches only (cls + V tokens enter the blocks).

        Args:
            patches: (B, G, k, 3).
            centers: (B, G, 3).
            mask: (B, G) bool, True = masked; the same count M per row.

        Returns:
            (B, V, D) visible patch outputs after the final LayerNorm (cls dropped), in
            patch order.
        """
        return self.student.forward_features(patches, centers, visible_mask=~mask)[:, 1:]

    def forward_decoder(self, visible: Tensor, centers: Tensor, mask: Tensor) -> Tensor:
        """Predict the masked patches' targets.

        Args:
            visible: (B, V, D) from :meth:`forward_encoder`.
            centers: (B, G, 3).
            mask: (B, G) bool, True = masked.

        Returns:
            (B, M, C) predictions for the masked patches in patch order; C = target_dim,
            or k*3 (patch-local xyz, flattened) for the ``"points"`` target.
        """
        batch, num_visible, _ = visible.shape
        _check_visible_mask(~mask, batch, centers.shape[1])
        pos_visible = self.decoder_pos_embed(_select(centers, ~mask))  # (B, V, D)
        pos_masked = self.decoder_pos_embed(_select(centers, mask))  # (B, M, D)
        num_masked = pos_masked.shape[1]
        if num_masked == 0:
            raise ValueError("mask must mark at least one patch as masked")
        if pos_visible.shape[1] != num_visible:
            raise ValueError(
                f"visible has {num_visible} tokens but the mask leaves {pos_visible.shape[1]}"
            )
        x = torch.cat([visible, self.mask_token.expand(batch, num_masked, -1)], dim=1)
        pos = torch.cat([pos_visible, pos_masked], dim=1)  # (B, G, D)
        for block in self.decoder:
            x = block(x + pos)
        return self.proj_head(self.decoder_norm(x[:, -num_masked:]))

    def forward_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss over the masked patches; no gradient reaches ``target``.

        Args:
            pred: (B, M, C) from :meth:`forward_decoder`.
            target: ``"latent"``: (B, M, target_dim) teacher features of the masked
                patches; ``"points"``: (B, M, k, 3) their patch points.

        Returns:
            Scalar: ``-mean cos(pred, target)`` (in [-1, 1]), or the mean CD-L2.
        """
        target = target.detach()
        if self.config.target == "latent":
            if target.shape != pred.shape:
                raise ValueError(
                    f"target must have the prediction's shape {tuple(pred.shape)}, "
                    f"got {tuple(target.shape)}"
                )
            return -F.cosine_similarity(pred, target.to(pred.dtype), dim=-1).mean()
        k = self.config.encoder.group_size
        if target.shape != (*pred.shape[:2], k, 3):
            raise ValueError(
                f"target must have shape (B, M, k, 3) = {(*pred.shape[:2], k, 3)}, "
                f"got {tuple(target.shape)}"
            )
        # point distances in fp32, also when autocast made the prediction bf16/fp16
        return chamfer_distance(pred.float().reshape(-1, k, 3), target.float().reshape(-1, k, 3), norm=2)

    def forward(
        self,
        patches: Tensor,
        centers: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One Stage II step's loss.

        Args:
            patches: (B, G, k, 3) grouped clouds (the teacher saw the same grouping).
            centers: (B, G, 3).
            target: ``"latent"``: (B, G, target_dim) teacher features of every patch;
                ``"points"``: (B, G, k, 3), or None to use ``patches``.
            mask: optional (B, G) bool (True = masked); drawn with
                :func:`act3d.ops.random_mask` from ``generator`` when None.
            generator: random source for the mask.

        Returns:
            Scalar loss.
        """
        batch, num_groups = patches.shape[:2]
        if target is None:
            if self.config.target != "points":
                raise ValueError("target is required for the 'latent' target")
            target = patches
        expected = (
            (batch, num_groups, self.config.target_dim)
            if self.config.target == "latent"
            else (batch, num_groups, self.config.encoder.group_size, 3)
        )
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target must have shape {expected} for the {self.config.target!r} target, "
                f"got {tuple(target.shape)}"
            )
        if mask is None:
            mask = self.random_mask(batch, generator=generator, device=patches.device)
        visible = self.forward_encoder(patches, centers, mask)
        pred = self.forward_decoder(visible, centers, mask)
        return self.forward_loss(pred, _select(target, mask))


def export_backbone(model: MaskedPointModel) -> dict[str, Tensor]:
    """The student backbone's weights (keys of :class:`PointEncoder`), detached copies."""
    return {k: v.detach().clone() for k, v in model.student.state_dict().items()}
