"""Transformer building blocks with timm-compatible parameter names.

A :class:`Block` is the pre-LN ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.
Its parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``) are those of ``timm.models.vision_transformer.Block``, so timm-format state
dicts load without renaming; the qkv Linear output splits as ``(3, heads, head_dim)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "Block", "DropPath", "Mlp", "drop_path_rates"]


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate per block: ``linspace(0, max_rate, depth)``."""
    if depth <= 0:
        raise ValueError(f"depth must be positive, got {depth}")
    if depth == 1:
        return [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``fc1 -> GELU (erf) -> dropout -> fc2 -> dropout``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv Linear (timm layout).

    Args:
        dim: token width D.
        num_heads: heads; ``D % num_heads == 0``.
        qkv_bias: bias on the qkv Linear (timm ViTs: True; the ACT student: False).
        fused: use ``F.scaled_dot_product_attention``; ``False`` runs the explicit
            softmax(QK^T/sqrt(d))V reference (same result up to float rounding).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hd)
        p = self.attn_drop if self.training else 0.0
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, T, T)
            attn = F.dropout(attn.softmax(dim=-1), p=p, training=self.training)
            y = attn @ v
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN Transformer block: ``x = x + dp(attn(norm1(x))); x = x + dp(mlp(norm2(x)))``.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of D.
        qkv_bias: bias on the qkv projection.
        drop_path: stochastic-depth rate of this block.
        norm_eps: LayerNorm epsilon (ACT student 1e-5; timm ViT 1e-6).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused_attention)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
