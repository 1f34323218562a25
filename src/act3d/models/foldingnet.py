"""FoldingNet-style patch decoder of the Stage I autoencoder (ACT_SPEC §1.4).

Each patch token is decoded on its own into points relative to its patch center:

1. coarse: an MLP ``dim → hidden → hidden → num_coarse·3`` gives ``num_coarse`` points;
2. fine: every coarse point is repeated over a ``grid_size × grid_size`` grid spanning
   ``[-grid_scale, grid_scale]²``; the feature ``[token ‖ grid (2) ‖ coarse point (3)]``
   runs through Conv1d ``(dim+5) → fold_hidden → fold_hidden → 3`` (BN, ReLU between) and
   the result is added to the coarse point.

So ``num_fine = num_coarse · grid_size²`` (8 · 4 = 32 in ACT, the patch size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FoldingDecoder"]


class FoldingDecoder(nn.Module):
    """Per-patch coarse-to-fine point decoder.

    Args:
        dim: token width.
        num_coarse: coarse points per patch.
        grid_size: side of the folding grid (grid_size² fine points per coarse point).
        grid_scale: half-extent of the folding grid.
        hidden: width of the coarse MLP.
        fold_hidden: width of the folding convolutions.
    """

    def __init__(
        self,
        dim: int,
        num_coarse: int = 8,
        grid_size: int = 2,
        grid_scale: float = 0.05,
        hidden: int = 1024,
        fold_hidden: int = 512,
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("num_coarse", num_coarse),
            ("grid_size", grid_size),
            ("hidden", hidden),
            ("fold_hidden", fold_hidden),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.dim = dim
        self.num_coarse = num_coarse
        self.grid_size = grid_size
        self.num_fine = num_coarse * grid_size**2
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 3 * num_coarse),
        )
        self.final_conv = nn.Sequential(
            nn.Conv1d(dim + 2 + 3, fold_hidden, 1),
            nn.BatchNorm1d(fold_hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(fold_hidden, fold_hidden, 1),
            nn.BatchNorm1d(fold_hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(fold_hidden, 3, 1),
        )
        steps = torch.linspace(-grid_scale, grid_scale, grid_size)
        gy, gx = torch.meshgrid(steps, steps, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=0)  # (2, S)
        self.register_buffer("folding_seed", grid, persistent=False)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Decode tokens into patch-local points.

        The folding convolutions run as matrix products on channels-last rows with the same
        parameters, and the first one's token term is computed once per patch (it is the
        same for all of the patch's points); :meth:`forward_naive` is the reference layout
        it matches to float rounding.

        Args:
            tokens: (B, G, dim).

        Returns:
            coarse: (B, G, num_coarse, 3).
            fine: (B, G, num_coarse · grid_size², 3); fine points ``s·S .. s·S+S-1`` come
                from coarse point ``s`` (S = grid_size²).
        """
        B, G = self._check(tokens)
        M, S, N = self.num_coarse, self.grid_size**2, self.num_fine
        feat = tokens.reshape(B * G, self.dim)
        coarse = self.mlp(feat).reshape(B * G, M, 3)
        anchor = coarse.unsqueeze(2).expand(-1, -1, S, -1).reshape(B * G, N, 3)  # (BG, N, 3)
        conv1, bn1, _, conv2, bn2, _, conv3 = self.final_conv
        w = conv1.weight[:, :, 0]  # (H, dim + 5): token, grid, anchor columns
        w_token, w_grid, w_anchor = w[:, : self.dim], w[:, self.dim : self.dim + 2], w[:, self.dim + 2 :]
        grid = self.folding_seed.to(feat.dtype).repeat(1, M).T  # (N, 2)
        # first layer split by input: the token's term once per patch, not once per point
        h = F.linear(feat, w_token, conv1.bias).unsqueeze(1) + F.linear(grid, w_grid) + F.linear(anchor, w_anchor)
        h = F.relu(bn1(h.reshape(B * G * N, -1)))  # (BGN, H)
        h = F.relu(bn2(F.linear(h, conv2.weight[:, :, 0], conv2.bias)))
        fine = F.linear(h, conv3.weight[:, :, 0], conv3.bias).reshape(B * G, N, 3) + anchor
        return coarse.reshape(B, G, M, 3), fine.reshape(B, G, N, 3)

    def _check(self, tokens: Tensor) -> tuple[int, int]:
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens must be (B, G, {self.dim}), got {tuple(tokens.shape)}")
        return tokens.shape[0], tokens.shape[1]

    def forward_naive(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Plain reference: the folding convolutions applied channels-first on the
        concatenated ``[token ‖ grid ‖ coarse point]`` features, as the reference code does.

        tokens: (B, G, dim) -> (coarse, fine), the same as :meth:`forward`.
        """
        B, G = self._check(tokens)
        M, S, N = self.num_coarse, self.grid_size**2, self.num_fine
        feat = tokens.reshape(B * G, self.dim)
        coarse = self.mlp(feat).reshape(B * G, M, 3)
        anchor = coarse.unsqueeze(2).expand(-1, -1, S, -1).reshape(B * G, N, 3)
        anchor = anchor.transpose(1, 2)  # (BG, 3, N)
        seed = self.folding_seed.to(feat.dtype).repeat(1, M)  # (2, N)
        fold_in = torch.cat(
            [
                feat.unsqueeze(2).expand(-1, -1, N),  # (BG, dim, N)
                seed.unsqueeze(0).expand(B * G, -1, -1),  # (BG, 2, N)
                anchor,  # (BG, 3, N)
            ],
            dim=1,
        )
        fine = self.final_conv(fold_in) + anchor  # (BG, 3, N)
        return coarse.reshape(B, G, M, 3), fine.transpose(1, 2).reshape(B, G, N, 3)
