"""Save and load a pretrained student backbone as one ``.safetensors`` file.

The file holds the tensors of a :class:`~act3d.models.student.PointEncoder` state dict
under their own keys, and metadata::

    {"format": "act3d.encoder", "format_version": "1", "encoder_config": "<JSON>"}

so :func:`load_encoder` rebuilds the encoder without any other file. Loading never runs
code from the file (safetensors holds plain tensors).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from act3d.models.student import EncoderConfig, PointEncoder, load_encoder_state

__all__ = ["ENCODER_FORMAT", "load_encoder", "save_encoder"]

ENCODER_FORMAT = "act3d.encoder"
_FORMAT_VERSION = "1"


def save_encoder(encoder: PointEncoder, path: str | os.PathLike[str]) -> Path:
    """Write ``encoder``'s weights and config to ``path`` atomically (temp file + rename).

    Args:
        encoder: the backbone (e.g. ``MaskedPointModel.student``).
        path: destination ``.safetensors`` file; its folder must exist.

    Returns:
        The path written.
    """
    if not isinstance(encoder, PointEncoder):
        raise ValueError(f"encoder must be a PointEncoder, got {type(encoder).__name__}")
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    metadata = {
        "format": ENCODER_FORMAT,
        "format_version": _FORMAT_VERSION,
        "encoder_config": json.dumps(encoder.config.to_dict(), sort_keys=True),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_config(path: Path) -> EncoderConfig:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if metadata.get("format") != ENCODER_FORMAT:
        raise ValueError(
            f"{path}: metadata 'format' is {metadata.get('format')!r}, expected {ENCODER_FORMAT!r}"
        )
    if "encoder_config" not in metadata:
        raise ValueError(f"{path}: metadata has no 'encoder_config'")
    try:
        values = json.loads(metadata["encoder_config"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: metadata 'encoder_config' is not valid JSON ({err})") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: metadata 'encoder_config' must be a JSON object")
    try:
        return EncoderConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad 'encoder_config': {err}") from err


def load_encoder(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> PointEncoder:
    """Load a backbone written by :func:`save_encoder`.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the weights.

    Returns:
        A :class:`PointEncoder` in eval mode mapping points (B, N, 3) -> features (B, 2D).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an act3d encoder file, or a key missing/unexpected/mis-shaped
            (the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no encoder file at {path}")
    config = _read_config(path)
    encoder = PointEncoder(config)
    state = load_file(str(path), device="cpu")
    load_encoder_state(encoder, state, strict=True, source=str(path))
    return encoder.to(device).eval()
