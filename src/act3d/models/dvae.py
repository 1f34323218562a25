"""Discrete bottleneck of the Stage I autoencoder: a Gumbel-softmax codebook (ACT_SPEC §1.2).

Each patch gets logits over ``K`` codes; a relaxed one-hot sample (Gumbel-softmax at
temperature τ) times the codebook ``(K, D)`` is its token. The KL term pulls the batch's
average code usage towards uniform (:func:`kl_to_uniform`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CODE_MODES", "GumbelCodebook", "kl_to_uniform"]

CODE_MODES = ("soft", "sample", "argmax")


class GumbelCodebook(nn.Module):
    """A ``(num_codes, dim)`` codebook read through Gumbel-softmax code weights.

    The codebook is initialised from a standard normal (as the reference).

    Args:
        num_codes: K, the vocabulary size (8192 in ACT).
        dim: D, the token width (384 in ACT).
    """

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        if num_codes <= 0 or dim <= 0:
            raise ValueError(f"num_codes and dim must be positive, got {num_codes}, {dim}")
        self.num_codes = num_codes
        self.dim = dim
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))

    def sample_codes(self, logits: Tensor, mode: str = "soft", tau: float = 1.0) -> Tensor:
        """Code weights for each patch.

        Args:
            logits: (B, G, K).
            mode: ``"soft"`` — Gumbel-softmax at ``tau`` (training); ``"sample"`` — a hard
                one-hot Gumbel sample (straight-through gradients at ``tau``; the sample
                itself does not depend on ``tau``); ``"argmax"`` — the deterministic one-hot
                of the largest logit (no gradient).
            tau: Gumbel-softmax temperature, > 0.

        Returns:
            weights: (B, G, K), each row sums to 1.
        """
        self._check_logits(logits)
        if mode not in CODE_MODES:
            raise ValueError(f"unknown code mode {mode!r}; valid choices: {list(CODE_MODES)}")
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if mode == "argmax":
            return F.one_hot(logits.argmax(dim=-1), self.num_codes).to(logits.dtype)
        return F.gumbel_softmax(logits, tau=tau, hard=mode == "sample", dim=-1)

    def embed(self, weights: Tensor) -> Tensor:
        """Mix codebook rows: weights (B, G, K) -> tokens (B, G, D)."""
        self._check_logits(weights)
        return weights @ self.codebook

    def lookup(self, code_idx: Tensor) -> Tensor:
        """Codebook rows of integer codes: code_idx (B, G) int64 -> tokens (B, G, D)."""
        if code_idx.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"code_idx must be an integer tensor, got {code_idx.dtype}")
        return F.embedding(code_idx, self.codebook)

    def forward(self, logits: Tensor, tau: float, hard: bool = False) -> Tensor:
        """Gumbel-softmax(logits, tau, hard) @ codebook: (B, G, K) -> tokens (B, G, D)."""
        return self.embed(self.sample_codes(logits, "sample" if hard else "soft", tau))

    def _check_logits(self, logits: Tensor) -> None:
        if logits.ndim != 3 or logits.shape[-1] != self.num_codes:
            raise ValueError(
                f"expected (B, G, {self.num_codes}) code logits/weights, "
                f"got {tuple(logits.shape)}"
            )


def kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(uniform ‖ q̄) of the per-cloud average code distribution, averaged over clouds.

    With ``q̄_b = mean_g softmax(logits[b, g])`` over the G patches of cloud ``b``:

        KL_b = Σ_k (1/K) · (log(1/K) − log q̄_b[k])
        loss = mean_b KL_b

    (the reference's ``F.kl_div(log q̄, log uniform, 'batchmean', log_target=True)``). It is
    0 when the codes of each cloud are used uniformly on average, and grows as usage
    collapses onto few codes. ``log q̄`` is computed with logsumexp for stability.

    Args:
        logits: (B, G, K).

    Returns:
        kl: () scalar, ≥ 0.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be (B, G, K), got {tuple(logits.shape)}")
    _, G, K = logits.shape
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 under AMP
    log_q = torch.logsumexp(F.log_softmax(logits, dim=-1), dim=1) - math.log(G)  # (B, K)
    kl = (-math.log(K) - log_q).mean(dim=-1)  # (B,)
    return kl.mean()
