"""The one interface every Stage I teacher backbone implements.

ACT uses a pretrained Transformer only through its blocks and final norm (ACT_SPEC §1.3):
no patch embedding, no cls token, no position table. A teacher therefore exposes just

- ``embed_dim`` — token width D of the backbone;
- ``num_blocks`` — how many blocks it has;
- ``run_block(i, x)`` — block ``i`` on tokens ``x: (B, T, D) -> (B, T, D)``;
- ``final_norm(x)`` — the backbone's closing normalisation (identity when it has none).

Adapters (ViT on act3d blocks, Hugging Face BERT family / DINOv2, random init) subclass
:class:`TeacherBackbone`; the autoencoder never needs to know which one it holds.
"""

from __future__ import annotations

from torch import Tensor, nn

from act3d.models.blocks import Block

__all__ = ["BlockStackTeacher", "TeacherBackbone"]


class TeacherBackbone(nn.Module):
    """Abstract teacher: a stack of Transformer blocks plus a final norm.

    Attributes:
        name: human-readable identifier (for logs and run folders).
        source: where the weights came from (a file, a directory, ``"random init"``).
        embed_dim: token width D.
        num_blocks: number of blocks.
    """

    name: str = "teacher"
    source: str = "random init"
    embed_dim: int
    num_blocks: int

    def run_block(self, i: int, x: Tensor) -> Tensor:
        """Apply block ``i`` (0-based). x: (B, T, D) -> (B, T, D)."""
        raise NotImplementedError

    def final_norm(self, x: Tensor) -> Tensor:
        """The backbone's final normalisation. x: (B, T, D) -> (B, T, D)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """All blocks then the final norm. x: (B, T, D) -> (B, T, D)."""
        for i in range(self.num_blocks):
            x = self.run_block(i, x)
        return self.final_norm(x)


class BlockStackTeacher(TeacherBackbone):
    """A ViT-style teacher built from act3d :class:`Block` s (timm parameter names).

    Its state dict uses timm's ViT names for the parts ACT uses — ``blocks.{i}.*`` and
    ``norm.*`` — so a timm checkpoint filtered to those keys loads directly.

    Args:
        embed_dim: token width D.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / D.
        qkv_bias: timm ViTs use a qkv bias.
        norm_eps: LayerNorm epsilon (timm ViT: 1e-6).
        name: identifier for logs.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        name: str = "vit",
    ) -> None:
        super().__init__()
        self.name = name
        self.embed_dim = embed_dim
        self.num_blocks = depth
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_eps=norm_eps)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def run_block(self, i: int, x: Tensor) -> Tensor:
        return self.blocks[i](x)

    def final_norm(self, x: Tensor) -> Tensor:
        return self.norm(x)
