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
from act3d.models.classifier import CLASSIFIER_MODES, PointClassifier
from act3d.models.dgcnn import DGCNN
from act3d.models.dvae import GumbelCodebook, kl_to_uniform
from act3d.models.encoder_api import load_encoder, save_encoder
from act3d.models.foldingnet import FoldingDecoder
from act3d.models.mpm import MaskedPointModel, MPMConfig, export_backbone
from act3d.models.partseg import PartSegmentationModel, interpolate_features
from act3d.models.patch_embed import PatchEmbed, PositionEmbed
from act3d.models.prompts import PromptTuning
from act3d.models.student import (
    ENCODER_PRESETS,
    EncoderConfig,
    LoadReport,
    PointEncoder,
    default_feature_layers,
    load_encoder_state,
)

__all__ = [
    "CLASSIFIER_MODES",
    "ENCODER_PRESETS",
    "EncoderConfig",
    "LoadReport",
    "MPMConfig",
    "MaskedPointModel",
    "PartSegmentationModel",
    "PointClassifier",
    "PointEncoder",
    "default_feature_layers",
    "export_backbone",
    "interpolate_features",
    "load_encoder",
    "load_encoder_state",
    "save_encoder",
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
