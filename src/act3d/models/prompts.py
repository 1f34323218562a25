"""Prompt tuning for a frozen Transformer teacher (ACT_SPEC §1.3, VPT-style).

``P`` learnable prompt tokens, each with its own learnable position, sit in the first ``P``
slots of the sequence. Their tokens (not their positions) go through dropout.

- **Shallow** (``deep=False``): one set, prepended once before block 0; the prompt slots
  then flow through all blocks like any token.
- **Deep** (``deep=True``): ``depth`` sets. Set 0 is prepended before block 0; before each
  block ``i = 1 .. depth-1`` the prompt slots of the hidden states *and* of the position
  sequence are replaced by set ``i`` (so block ``i`` sees its own prompts).

Use with blocks that take ``x + pos``::

    x, pos = prompts.prepend(x, pos)
    for i in range(depth):
        if i > 0 and prompts.deep:
            x, pos = prompts.replace(i, x, pos)
        x = block[i](x + pos)
    x = prompts.strip(x)

Parameters are initialised with a truncated normal, std 0.02 (as the reference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PromptTuning"]


class PromptTuning(nn.Module):
    """Learnable prompt tokens and positions for a ``depth``-block Transformer.

    Args:
        num_prompts: P, prompt slots.
        dim: token width D.
        depth: number of blocks of the Transformer they prompt.
        deep: one prompt set per block (True) or a single set before block 0 (False).
        dropout: dropout on prompt tokens.

    Attributes:
        tokens: (S, P, D) with S = depth if deep else 1.
        pos: (S, P, D) learned positions of the prompt slots.
    """

    def __init__(
        self, num_prompts: int, dim: int, depth: int, deep: bool, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if num_prompts <= 0 or dim <= 0 or depth <= 0:
            raise ValueError(
                f"num_prompts, dim and depth must be positive, got {num_prompts}, {dim}, {depth}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_prompts = num_prompts
        self.dim = dim
        self.depth = depth
        self.deep = deep
        sets = depth if deep else 1
        self.tokens = nn.Parameter(torch.empty(sets, num_prompts, dim))
        self.pos = nn.Parameter(torch.empty(sets, num_prompts, dim))
        nn.init.trunc_normal_(self.tokens, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.pos, std=0.02, a=-0.04, b=0.04)
        self.dropout = nn.Dropout(dropout)

    def _prompt(self, i: int, batch: int) -> tuple[Tensor, Tensor]:
        tokens = self.dropout(self.tokens[i]).unsqueeze(0).expand(batch, -1, -1)
        return tokens, self.pos[i].unsqueeze(0).expand(batch, -1, -1)

    def prepend(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Put prompt set 0 in front.

        Args:
            x: (B, T, D) tokens; pos: (B, T, D) their positions.

        Returns:
            x: (B, P + T, D); pos: (B, P + T, D).
        """
        self._check(x, pos)
        tokens, tpos = self._prompt(0, x.shape[0])
        return torch.cat([tokens, x], dim=1), torch.cat([tpos, pos], dim=1)

    def replace(self, i: int, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Deep prompts: overwrite the first P slots with set ``i`` (before block ``i``).

        Args:
            i: block index, ``1 <= i < depth``; only for ``deep=True``.
            x: (B, P + T, D) hidden states; pos: (B, P + T, D) positions.

        Returns:
            x, pos: same shapes, prompt slots replaced.
        """
        if not self.deep:
            raise ValueError("replace() needs deep prompts (deep=True)")
        if not 1 <= i < self.depth:
            raise ValueError(f"block index must be in [1, {self.depth}), got {i}")
        self._check(x, pos)
        P = self.num_prompts
        if x.shape[1] <= P:
            raise ValueError(f"x has {x.shape[1]} slots, expected more than {P} prompts")
        tokens, tpos = self._prompt(i, x.shape[0])
        return torch.cat([tokens, x[:, P:]], dim=1), torch.cat([tpos, pos[:, P:]], dim=1)

    def strip(self, x: Tensor) -> Tensor:
        """Drop the prompt slots: (B, P + T, D) -> (B, T, D)."""
        return x[:, self.num_prompts :]

    def _check(self, x: Tensor, pos: Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, T, {self.dim}), got {tuple(x.shape)}")
        if pos.shape != x.shape:
            raise ValueError(f"pos must match x {tuple(x.shape)}, got {tuple(pos.shape)}")
