"""The student point encoder: patches -> patch tokens -> Transformer (ACT_SPEC §0, §2, §3).

Stages (each its own method):

``group(points) -> (patches, centers)`` -> ``embed(patches) -> tokens`` ->
``forward_features(patches, centers, visible_mask) -> (B, 1+T, D)`` ->
``forward_head(x) -> (B, 2D)``; ``forward(points)`` chains them all.

Module names follow the reference checkpoint so its student weights map with prefix
changes only (ACT_SPEC §5): ``cls_token``, ``cls_pos``, ``encoder`` (mini-PointNet),
``pos_embed`` (center MLP), ``blocks.{i}`` (reference ``blocks.blocks.{i}``), ``norm``.

Only the ``paper`` preset is the reference's size; ``small`` and ``tiny`` are act3d's own
CPU-friendly presets (not from the paper), used for benchmarks on a laptop and for tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from act3d.models.blocks import Block, drop_path_rates
from act3d.models.patch_embed import PatchEmbed, PositionEmbed
from act3d.ops import group as _group_points

__all__ = [
    "ENCODER_PRESETS",
    "EncoderConfig",
    "LoadReport",
    "PointEncoder",
    "default_feature_layers",
    "init_weights",
    "load_encoder_state",
]

ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "small": {"embed_dim": 256, "depth": 6, "num_heads": 4},
    "tiny": {"embed_dim": 128, "depth": 4, "num_heads": 4},
}


@dataclass(frozen=True)
class EncoderConfig:
    """Size of the student encoder. The defaults are the paper's (ACT_SPEC §0, §2).

    Attributes:
        num_groups: patches G per cloud (64 for 1k points, 128 for 2k, 512 for 8k).
        group_size: points k per patch.
        embed_dim: token width D.
        depth: Transformer blocks.
        num_heads: attention heads (``embed_dim % num_heads == 0``).
        mlp_ratio: MLP hidden width as a multiple of D.
        drop_path: largest stochastic-depth rate (``linspace(0, drop_path, depth)``).
        norm_eps: LayerNorm epsilon.
        qkv_bias: bias on the qkv projection (reference: False).
    """

    num_groups: int = 64
    group_size: int = 32
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    norm_eps: float = 1e-5
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("num_groups", "group_size", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"EncoderConfig.embed_dim ({self.embed_dim}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"EncoderConfig.drop_path must be in [0, 1), got {self.drop_path}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"EncoderConfig.mlp_ratio must be positive, got {self.mlp_ratio}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EncoderConfig:
        """A named size (``paper``, ``small``, ``tiny``) with optional field overrides."""
        if name not in ENCODER_PRESETS:
            raise ValueError(
                f"unknown encoder preset {name!r}; valid choices: {sorted(ENCODER_PRESETS)}"
            )
        return cls.from_dict({**ENCODER_PRESETS[name], **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> EncoderConfig:
        """The paper's student: 384-d, 12 blocks, 6 heads (21.8M parameters)."""
        return cls.preset("paper", **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> EncoderConfig:
        """act3d's CPU benchmark size: 256-d, 6 blocks, 4 heads (not from the paper)."""
        return cls.preset("small", **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> EncoderConfig:
        """act3d's test/demo size: 128-d, 4 blocks, 4 heads (not from the paper)."""
        return cls.preset("tiny", **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown EncoderConfig keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**dict(values))


def default_feature_layers(depth: int) -> tuple[int, int, int]:
    """Blocks ending each third of the stack, 0-based: (3, 7, 11) for depth 12."""
    if depth < 3:
        raise ValueError(f"need at least 3 blocks for three feature layers, got depth {depth}")
    return tuple(round((i + 1) * depth / 3) - 1 for i in range(3))  # type: ignore[return-value]


def init_weights(module: nn.Module) -> None:
    """Reference initialisation, for ``module.apply``: truncated normal (std 0.02) for
    Linear and Conv1d weights, zero biases, LayerNorm weight 1 and bias 0."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_encoder_state` did.

    Attributes:
        loaded: backbone keys copied from the state dict.
        missing: backbone keys absent from the state dict (kept at their current values).
        unexpected: state-dict keys the backbone does not have (ignored).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def load_encoder_state(
    encoder: nn.Module,
    state_dict: Mapping[str, Tensor],
    strict: bool = True,
    source: str = "state dict",
) -> LoadReport:
    """Copy a backbone state dict into ``encoder``, checking every key.

    Args:
        encoder: the module to fill (a :class:`PointEncoder`).
        state_dict: tensors keyed like ``encoder.state_dict()``.
        strict: when True, any missing or unexpected key raises ``ValueError``; when
            False they are reported and the matching keys are still loaded.
        source: what the tensors came from (a file name), used in error messages.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ValueError: a shape mismatch (always), or missing/unexpected keys when strict.
    """
    own = encoder.state_dict()
    missing = tuple(k for k in own if k not in state_dict)
    unexpected = tuple(k for k in state_dict if k not in own)
    for key, value in state_dict.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source}: shape mismatch for key {key!r}: got {tuple(value.shape)}, "
                f"the encoder expects {tuple(own[key].shape)}"
            )
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source}: backbone keys do not match; missing: {list(missing)}; "
            f"unexpected: {list(unexpected)}"
        )
    loaded = tuple(k for k in own if k in state_dict)
    encoder.load_state_dict({k: state_dict[k] for k in loaded}, strict=False)
    return LoadReport(loaded=loaded, missing=missing, unexpected=unexpected)


def _check_visible_mask(visible_mask: Tensor, batch: int, num_groups: int) -> int:
    """Validate a (B, G) bool mask with the same count per row; return that count."""
    if visible_mask.dtype != torch.bool:
        raise ValueError(f"visible_mask must be a bool tensor, got dtype {visible_mask.dtype}")
    if tuple(visible_mask.shape) != (batch, num_groups):
        raise ValueError(
            f"visible_mask must have shape (B, G) = {(batch, num_groups)}, "
            f"got {tuple(visible_mask.shape)}"
        )
    counts = visible_mask.sum(dim=1)
    if batch > 0 and not bool((counts == counts[0]).all()):
        raise ValueError(
            "visible_mask must select the same number of tokens in every row, "
            f"got {counts.tolist()}"
        )
    count = int(counts[0]) if batch > 0 else 0
    if count == 0:
        raise ValueError("visible_mask selects no token")
    return count


class PointEncoder(nn.Module):
    """ACT student backbone: mini-PointNet patch tokens + cls token + pre-LN Transformer.

    Args:
        config: sizes; see :class:`EncoderConfig` (default: the paper's).
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        config = EncoderConfig() if config is None else config
        if not isinstance(config, EncoderConfig):
            raise ValueError(f"config must be an EncoderConfig, got {type(config).__name__}")
        self.config = config
        dim = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = PatchEmbed(dim)
        self.pos_embed = PositionEmbed(dim)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                drop_path=rate,
                norm_eps=config.norm_eps,
            )
            for rate in drop_path_rates(config.drop_path, config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)

    @property
    def embed_dim(self) -> int:
        """Token width D."""
        return self.config.embed_dim

    @property
    def out_dim(self) -> int:
        """Width of :meth:`forward`'s output: 2D ([cls ‖ max])."""
        return 2 * self.config.embed_dim

    def group(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """FPS (from index 0) + kNN patches.

        points: (B, N, 3) -> patches (B, G, k, 3) relative to their centers, centers (B, G, 3).
        """
        return _group_points(points, self.config.num_groups, self.config.group_size)

    def embed(self, patches: Tensor) -> Tensor:
        """patches: (B, G, k, 3) -> tokens (B, G, D)."""
        return self.encoder(patches)

    def _input_sequence(
        self, patches: Tensor, centers: Tensor, visible_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Tokens and positions with the cls slot first: both (B, 1+T, D)."""
        if patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(f"patches must have shape (B, G, k, 3), got {tuple(patches.shape)}")
        if tuple(centers.shape) != (patches.shape[0], patches.shape[1], 3):
            raise ValueError(
                f"centers must have shape (B, G, 3) = {(patches.shape[0], patches.shape[1], 3)}, "
                f"got {tuple(centers.shape)}"
            )
        tokens = self.embed(patches)  # (B, G, D); BN statistics over all patches
        batch, num_groups, dim = tokens.shape
        if visible_mask is not None:
            keep = _check_visible_mask(visible_mask, batch, num_groups)
            tokens = tokens[visible_mask].reshape(batch, keep, dim)  # (B, V, D)
            centers = centers[visible_mask].reshape(batch, keep, 3)
        pos = self.pos_embed(centers)  # (B, T, D)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), pos], dim=1)
        return x, pos

    def forward_features(
        self, patches: Tensor, centers: Tensor, visible_mask: Tensor | None = None
    ) -> Tensor:
        """Run the Transformer; the position embedding is added before every block.

        Args:
            patches: (B, G, k, 3) patch points relative to their centers.
            centers: (B, G, 3) patch centers.
            visible_mask: optional (B, G) bool, True for the patches that enter the
                encoder; every row must select the same number V of patches.

        Returns:
            (B, 1+T, D) after the final LayerNorm, cls first; T = V, or G without a mask.
        """
        x, pos = self._input_sequence(patches, centers, visible_mask)
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x)

    def intermediate_features(
        self,
        patches: Tensor,
        centers: Tensor,
        layers: Sequence[int] | None = None,
        with_cls_token: bool = True,
    ) -> Tensor:
        """Patch features of several blocks, each through the final LayerNorm.

        Args:
            patches: (B, G, k, 3).
            centers: (B, G, 3).
            layers: 0-based block indices; None gives :func:`default_feature_layers`
                (blocks 4, 8 and 12 of 12).
            with_cls_token: run the blocks with the cls token in the sequence (as
                :meth:`forward_features`); the reference part-segmentation model runs
                without it. The cls slot is never returned.

        Returns:
            (B, G, len(layers) * D): the layers' patch features concatenated in the order
            given.
        """
        depth = len(self.blocks)
        layers = default_feature_layers(depth) if layers is None else tuple(layers)
        if not layers or any(not isinstance(i, int) or not 0 <= i < depth for i in layers):
            raise ValueError(f"layers must be block indices in [0, {depth}), got {layers}")
        x, pos = self._input_sequence(patches, centers, None)
        if not with_cls_token:
            x, pos = x[:, 1:], pos[:, 1:]
        start = 1 if with_cls_token else 0
        collected: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[: max(layers) + 1]):
            x = block(x + pos)
            if i in layers:
                collected[i] = self.norm(x[:, start:])
        return torch.cat([collected[i] for i in layers], dim=-1)

    def forward_head(self, features: Tensor) -> Tensor:
        """Global descriptor. features: (B, 1+T, D) -> (B, 2D) = [cls ‖ max over patches]."""
        return torch.cat([features[:, 0], features[:, 1:].max(dim=1).values], dim=-1)

    def forward(self, points: Tensor) -> Tensor:
        """points: (B, N, 3) -> features (B, 2D). Point order matters (FPS starts at 0)."""
        patches, centers = self.group(points)
        return self.forward_head(self.forward_features(patches, centers))
