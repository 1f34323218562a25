"""Building blocks and models: Stage I autoencoder, Stage II student, downstream heads."""

from act3d.models.autoencoder import (
    ACTAutoencoder,
    AutoencoderConfig,
    AutoencoderOutput,
    autoencoder_loss,
    kl_weight_schedule,
    tau_schedule,
)
from act3d.models.blocks import Block, drop_path_rates
from act3d.models.dgcnn import DGCNN
from act3d.models.dvae import GumbelCodebook, kl_to_uniform
from act3d.models.foldingnet import FoldingDecoder
from act3d.models.patch_embed import PatchEmbed, PositionEmbed
from act3d.models.prompts import PromptTuning

__all__ = [
    "ACTAutoencoder",
    "AutoencoderConfig",
    "AutoencoderOutput",
    "Block",
    "DGCNN",
    "FoldingDecoder",
    "GumbelCodebook",
    "PatchEmbed",
    "PositionEmbed",
    "PromptTuning",
    "autoencoder_loss",
    "drop_path_rates",
    "kl_to_uniform",
    "kl_weight_schedule",
    "tau_schedule",
]
