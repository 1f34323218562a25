"""Stage I of ACT: a pretrained Transformer turned into a 3D autoencoder (ACT_SPEC §1).

The whole model on one screen::

    patches (B,G,k,3), centers (B,G,3)
      tokenize:  PatchEmbed(C) -> DGCNN(C -> K)                      -> logits  (B,G,K)
      quantize:  Gumbel-softmax(logits, tau) @ codebook (K,C)         -> tokens  (B,G,C)
      encode:    Linear C->D, pos = MLP(centers), prompts,
                 h = block_i(h + pos) for every teacher block, final norm,
                 drop prompts, Linear D->C                            -> (B,G,C)
                 then DGCNN(C -> C)                                   -> latent  (B,G,C)
      decode:    FoldingDecoder                                       -> coarse (B,G,k/S,3),
                                                                         fine   (B,G,k,3)
      loss:      CD-L1(coarse, patch) + CD-L1(fine, patch) + beta * KL(uniform || mean_g q)

``prompt_mode`` selects what of the teacher is trained:

- ``"prompt"`` (the paper's setting, the default): backbone frozen, prompt tokens learned;
- ``"full"``: backbone trained, no prompts;
- ``"frozen"``: backbone frozen, no prompts (the paper's Stage I ablation).

A frozen backbone has ``requires_grad=False`` on all its parameters and stays in eval mode
even when the autoencoder is put in train mode (its dropout stays off). Gradients still
flow *through* it to the parts before it. (The reference runs a frozen, prompt-free
backbone under ``torch.no_grad``, so there its tokenizer gets no reconstruction gradient
at all; act3d does not copy that.)

Submodules keep the reference's names (``encoder``, ``dgcnn_1``, ``proj_pre``,
``visual_pos_embed``, ``proj_post``, ``dgcnn_2``, ``decoder``); the codebook matrix is
``codebook.codebook`` (reference: ``codebook``), the backbone ``teacher`` (reference:
``visual_embed``) and the prompts ``prompts.tokens`` / ``prompts.pos`` (reference: separate
shallow and deep parameters).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from act3d.models.dgcnn import DGCNN
from act3d.models.dvae import GumbelCodebook, kl_to_uniform
from act3d.models.foldingnet import FoldingDecoder
from act3d.models.patch_embed import PatchEmbed, PositionEmbed
from act3d.models.prompts import PromptTuning
from act3d.models.teachers.base import TeacherBackbone
from act3d.ops import chamfer_distance

__all__ = [
    "AUTOENCODER_PRESETS",
    "ACTAutoencoder",
    "AutoencoderConfig",
    "AutoencoderOutput",
    "LATENT_CODES",
    "LATENT_OUTPUTS",
    "PROMPT_MODES",
    "autoencoder_loss",
    "kl_weight_schedule",
    "tau_schedule",
]

PROMPT_MODES = ("prompt", "full", "frozen")
LATENT_CODES = ("sample", "argmax")
LATENT_OUTPUTS = ("dgcnn", "transformer")


AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "token_dim": 256,
        "num_codes": 2048,
        "dgcnn_widths": (128, 256, 256, 512),
        "num_prompts": 32,
        "decoder_hidden": 512,
        "fold_hidden": 256,
    },
    "tiny": {
        "token_dim": 64,
        "num_codes": 256,
        "dgcnn_widths": (32, 64, 64, 128),
        "num_prompts": 8,
        "decoder_hidden": 256,
        "fold_hidden": 128,
    },
}

_POSITIVE_INTS = (
    "num_groups",
    "group_size",
    "token_dim",
    "num_codes",
    "dgcnn_k",
    "num_prompts",
    "pos_hidden",
    "grid_size",
    "decoder_hidden",
    "fold_hidden",
)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Stage I autoencoder hyper-parameters. The defaults are the paper's (ACT_SPEC §1).

    Attributes:
        num_groups: G, patches per cloud (used by whoever groups the cloud; the model itself
            accepts any G >= dgcnn_k).
        group_size: k, points per patch; the decoder emits this many fine points.
        token_dim: C, width of patch embeddings, codebook entries and the latent.
        num_codes: K, codebook size.
        dgcnn_k: neighbouring centers per DGCNN node (itself included).
        dgcnn_widths: the four EdgeConv widths of both DGCNNs (reference 256, 512, 512,
            1024; smaller for tiny models).
        num_prompts: P, prompt tokens (used by prompt_mode "prompt").
        deep_prompts: one prompt set per teacher block (True) or one before block 0.
        prompt_mode: "prompt" | "full" | "frozen" (see the module docstring).
        prompt_dropout: dropout on prompt tokens.
        pos_hidden: hidden width of the center position MLP.
        grid_size: side of the folding grid; num_coarse = group_size / grid_size².
        grid_scale: half-extent of the folding grid.
        decoder_hidden: width of the decoder's coarse MLP.
        fold_hidden: width of the decoder's folding convolutions.
    """

    num_groups: int = 64
    group_size: int = 32
    token_dim: int = 384
    num_codes: int = 8192
    dgcnn_k: int = 4
    dgcnn_widths: tuple[int, ...] = (256, 512, 512, 1024)
    num_prompts: int = 64
    deep_prompts: bool = True
    prompt_mode: str = "prompt"
    prompt_dropout: float = 0.1
    pos_hidden: int = 128
    grid_size: int = 2
    grid_scale: float = 0.05
    decoder_hidden: int = 1024
    fold_hidden: int = 512

    def __post_init__(self) -> None:
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(
                f"unknown prompt_mode {self.prompt_mode!r}; valid choices: {list(PROMPT_MODES)}"
            )
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"AutoencoderConfig.{name} must be a positive int, got {value!r}")
        if self.group_size % self.grid_size**2 != 0:
            raise ValueError(
                f"AutoencoderConfig.group_size ({self.group_size}) must be divisible by "
                f"grid_size² ({self.grid_size**2})"
            )
        for name in ("token_dim", "num_codes"):
            if getattr(self, name) % 4 != 0:
                raise ValueError(
                    f"AutoencoderConfig.{name} must be a multiple of 4 (DGCNN GroupNorm(4)), "
                    f"got {getattr(self, name)}"
                )
        widths = tuple(self.dgcnn_widths)
        if len(widths) != 4 or any(isinstance(w, bool) or not isinstance(w, int) for w in widths):
            raise ValueError(f"AutoencoderConfig.dgcnn_widths must be 4 ints, got {widths}")
        if any(w <= 0 or w % 4 for w in widths):
            raise ValueError(
                f"AutoencoderConfig.dgcnn_widths must be positive multiples of 4, got {widths}"
            )
        object.__setattr__(self, "dgcnn_widths", widths)
        if self.num_groups < self.dgcnn_k:
            raise ValueError(
                f"AutoencoderConfig.num_groups ({self.num_groups}) must be >= "
                f"dgcnn_k ({self.dgcnn_k})"
            )
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(
                f"AutoencoderConfig.prompt_dropout must be in [0, 1), got {self.prompt_dropout}"
            )
        if self.grid_scale < 0:
            raise ValueError(f"AutoencoderConfig.grid_scale must be >= 0, got {self.grid_scale}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AutoencoderConfig:
        """A named size (``paper``, ``small``, ``tiny``) with optional field overrides."""
        if name not in AUTOENCODER_PRESETS:
            raise ValueError(
                f"unknown autoencoder preset {name!r}; valid choices: {sorted(AUTOENCODER_PRESETS)}"
            )
        return cls.from_dict({**AUTOENCODER_PRESETS[name], **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> AutoencoderConfig:
        """The paper's Stage I: C=384, 8192 codes, 64 deep prompts, reference DGCNN widths."""
        return cls.preset("paper", **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> AutoencoderConfig:
        """act3d's CPU benchmark size: C=256, 2048 codes, half-width DGCNN (not the paper)."""
        return cls.preset("small", **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> AutoencoderConfig:
        """act3d's test/demo size: C=64, 256 codes, 8 prompts (not from the paper)."""
        return cls.preset("tiny", **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (``dgcnn_widths`` as a list, YAML/JSON-friendly)."""
        values = dataclasses.asdict(self)
        values["dgcnn_widths"] = list(self.dgcnn_widths)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AutoencoderConfig:
        """Build from a dict; unknown keys raise ``ValueError`` listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(
                f"unknown AutoencoderConfig keys {unknown}; valid keys: {sorted(valid)}"
            )
        return cls(**dict(values))

    @property
    def num_coarse(self) -> int:
        """Coarse points per patch: group_size / grid_size²."""
        return self.group_size // self.grid_size**2

    @property
    def frozen_backbone(self) -> bool:
        """Whether the teacher's parameters are frozen (modes "prompt" and "frozen")."""
        return self.prompt_mode != "full"


@dataclass
class AutoencoderOutput:
    """What one Stage I forward produces.

    Attributes:
        logits: (B, G, K) code logits.
        tokens: (B, G, C) quantised tokens (code weights @ codebook).
        latent: (B, G, C) decoder input (second DGCNN output).
        coarse: (B, G, num_coarse, 3) patch-local coarse points.
        fine: (B, G, group_size, 3) patch-local fine points.
    """

    logits: Tensor
    tokens: Tensor
    latent: Tensor
    coarse: Tensor
    fine: Tensor


class ACTAutoencoder(nn.Module):
    """The cross-modal autoencoder: point tokenizer → pretrained Transformer → decoder.

    Args:
        config: hyper-parameters.
        teacher: the Transformer backbone (any :class:`TeacherBackbone`); frozen in place
            for prompt modes "prompt" and "frozen".
    """

    def __init__(self, config: AutoencoderConfig, teacher: TeacherBackbone) -> None:
        super().__init__()
        if not isinstance(teacher, TeacherBackbone):
            raise ValueError(f"teacher must be a TeacherBackbone, got {type(teacher).__name__}")
        self.config = config
        C, D = config.token_dim, teacher.embed_dim
        self.encoder = PatchEmbed(C)
        self.dgcnn_1 = DGCNN(C, config.num_codes, config.dgcnn_k, config.dgcnn_widths)
        self.codebook = GumbelCodebook(config.num_codes, C)
        self.proj_pre = nn.Linear(C, D)
        self.visual_pos_embed = PositionEmbed(D, config.pos_hidden)
        self.prompts = (
            PromptTuning(
                config.num_prompts,
                D,
                teacher.num_blocks,
                deep=config.deep_prompts,
                dropout=config.prompt_dropout,
            )
            if config.prompt_mode == "prompt"
            else None
        )
        self.teacher = teacher
        self.proj_post = nn.Linear(D, C)
        self.dgcnn_2 = DGCNN(C, C, config.dgcnn_k, config.dgcnn_widths)
        self.decoder = FoldingDecoder(
            C,
            num_coarse=config.num_coarse,
            grid_size=config.grid_size,
            grid_scale=config.grid_scale,
            hidden=config.decoder_hidden,
            fold_hidden=config.fold_hidden,
        )
        if config.frozen_backbone:
            self.teacher.requires_grad_(False)
            self.teacher.eval()

    def train(self, mode: bool = True) -> ACTAutoencoder:
        """Set train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.config.frozen_backbone:
            self.teacher.eval()
        return self

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) for every parameter that requires grad."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter that requires grad (the frozen backbone's do not)."""
        return (p for _, p in self.named_trainable_parameters())

    def tokenize(self, patches: Tensor, centers: Tensor) -> Tensor:
        """Code logits per patch: patches (B, G, k, 3), centers (B, G, 3) -> (B, G, K)."""
        return self.dgcnn_1(self.encoder(patches), centers)

    def quantize(self, logits: Tensor, tau: float, hard: bool = False) -> Tensor:
        """Gumbel-softmax(logits, tau, hard) @ codebook: (B, G, K) -> tokens (B, G, C)."""
        return self.codebook(logits, tau, hard)

    def forward_teacher(self, tokens: Tensor, centers: Tensor) -> Tensor:
        """The Transformer path: Linear in, blocks with positions and prompts, Linear out.

        Args:
            tokens: (B, G, C); centers: (B, G, 3).

        Returns:
            (B, G, C), before the second DGCNN.
        """
        h = self.proj_pre(tokens)  # (B, G, D)
        pos = self.visual_pos_embed(centers)  # (B, G, D)
        if self.prompts is not None:
            h, pos = self.prompts.prepend(h, pos)  # (B, P + G, D)
        for i in range(self.teacher.num_blocks):
            if i > 0 and self.prompts is not None and self.prompts.deep:
                h, pos = self.prompts.replace(i, h, pos)
            h = self.teacher.run_block(i, h + pos)
        h = self.teacher.final_norm(h)
        if self.prompts is not None:
            h = self.prompts.strip(h)  # (B, G, D)
        return self.proj_post(h)

    def encode(self, tokens: Tensor, centers: Tensor) -> Tensor:
        """Tokens to decoder input: Transformer path then the second DGCNN -> (B, G, C)."""
        return self.dgcnn_2(self.forward_teacher(tokens, centers), centers)

    def decode(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """latent (B, G, C) -> (coarse (B, G, num_coarse, 3), fine (B, G, group_size, 3))."""
        return self.decoder(latent)

    def forward(
        self, patches: Tensor, centers: Tensor, tau: float = 1.0, hard: bool = False
    ) -> AutoencoderOutput:
        """Autoencode grouped clouds.

        Args:
            patches: (B, G, k, 3) patch points relative to their centers.
            centers: (B, G, 3) patch centers.
            tau: Gumbel-softmax temperature.
            hard: straight-through hard one-hot codes instead of soft ones.

        Returns:
            AutoencoderOutput with logits, tokens, latent, coarse, fine.
        """
        self._check_inputs(patches, centers)
        logits = self.tokenize(patches, centers)
        tokens = self.quantize(logits, tau, hard)
        latent = self.encode(tokens, centers)
        coarse, fine = self.decode(latent)
        return AutoencoderOutput(logits, tokens, latent, coarse, fine)

    @torch.no_grad()
    def latent_features(
        self,
        patches: Tensor,
        centers: Tensor,
        code: str = "sample",
        output: str = "dgcnn",
    ) -> Tensor:
        """Stage II targets: per-patch latent features, without gradient.

        The caller chooses the mode: the reference leaves the teacher in train mode
        (batch-statistics BN, prompt dropout on); ``model.eval()`` is the natural variant.

        Args:
            patches: (B, G, k, 3); centers: (B, G, 3).
            code: "sample" — a hard one-hot Gumbel sample at tau=1 (the reference);
                "argmax" — the most likely code (deterministic).
            output: "dgcnn" — the second DGCNN's output, i.e. the decoder input (the
                reference); "transformer" — the Transformer path's output before it.

        Returns:
            features: (B, G, C).
        """
        if code not in LATENT_CODES:
            raise ValueError(f"unknown code {code!r}; valid choices: {list(LATENT_CODES)}")
        if output not in LATENT_OUTPUTS:
            raise ValueError(f"unknown output {output!r}; valid choices: {list(LATENT_OUTPUTS)}")
        self._check_inputs(patches, centers)
        logits = self.tokenize(patches, centers)
        tokens = self.codebook.embed(self.codebook.sample_codes(logits, code, tau=1.0))
        features = self.forward_teacher(tokens, centers)
        if output == "dgcnn":
            features = self.dgcnn_2(features, centers)
        return features

    def _check_inputs(self, patches: Tensor, centers: Tensor) -> None:
        if patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(f"patches must be (B, G, k, 3), got {tuple(patches.shape)}")
        if centers.shape != patches.shape[:2] + (3,):
            raise ValueError(
                f"centers must be {tuple(patches.shape[:2]) + (3,)}, got {tuple(centers.shape)}"
            )


def autoencoder_loss(
    out: AutoencoderOutput, patches: Tensor, kl_weight: float
) -> dict[str, Tensor]:
    """Stage I loss: CD-L1(coarse, patch) + CD-L1(fine, patch) + kl_weight · KL.

    Chamfer distances are per patch (clouds of shape (B·G, ·, 3)), averaged over all
    patches; KL is :func:`act3d.models.dvae.kl_to_uniform` of the logits.

    Args:
        out: the autoencoder's output.
        patches: (B, G, k, 3) ground-truth patch points (relative to their centers).
        kl_weight: beta.

    Returns:
        {"loss", "cd_coarse", "cd_fine", "kl"}: scalar tensors; only "loss" is meant for
        backward (the others are attached to the graph too, for logging use ``.item()``).
    """
    if patches.ndim != 4 or patches.shape[:2] != out.fine.shape[:2]:
        raise ValueError(
            f"patches must be (B, G, k, 3) with (B, G) = {tuple(out.fine.shape[:2])}, "
            f"got {tuple(patches.shape)}"
        )
    B, G, k, _ = patches.shape
    target = patches.reshape(B * G, k, 3)
    # Chamfer in the patches' dtype: under bf16/fp16 autocast the decoder's output is
    # low-precision, and point distances are better taken in fp32 anyway.
    cd_coarse = chamfer_distance(out.coarse.to(target.dtype).reshape(B * G, -1, 3), target, norm=1)
    cd_fine = chamfer_distance(out.fine.to(target.dtype).reshape(B * G, -1, 3), target, norm=1)
    kl = kl_to_uniform(out.logits)
    loss = cd_coarse + cd_fine + kl_weight * kl
    return {"loss": loss, "cd_coarse": cd_coarse, "cd_fine": cd_fine, "kl": kl}


def _cosine(progress: float, start: float, end: float) -> float:
    """Cosine from ``start`` (progress 0) to ``end`` (progress 1)."""
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


def tau_schedule(it: int, total: int = 100_000, start: float = 1.0, end: float = 0.0625) -> float:
    """Gumbel temperature at iteration ``it``.

    Cosine from ``start`` (it = 0) to ``end`` (it = total), then constant ``end``.
    """
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if it < 0:
        raise ValueError(f"it must be >= 0, got {it}")
    return _cosine(min(it / total, 1.0), start, end)


def kl_weight_schedule(
    it: int, warmup_zero: int = 10_000, ramp: int = 100_000, end: float = 0.1
) -> float:
    """KL weight beta: 0 for ``warmup_zero`` its, then cosine ``0 → end`` over ``ramp`` its."""
    if ramp <= 0 or warmup_zero < 0:
        raise ValueError(f"ramp must be positive and warmup_zero >= 0, got {ramp}, {warmup_zero}")
    if it < 0:
        raise ValueError(f"it must be >= 0, got {it}")
    if it < warmup_zero:
        return 0.0
    return _cosine(min((it - warmup_zero) / ramp, 1.0), 0.0, end)
