"""Import reference ACT / Point-MAE checkpoints, and export act3d weights back (ACT_SPEC §5).

Reference checkpoints are ``.pth`` pickles. They are read with
``torch.load(weights_only=True)`` only (:func:`load_reference_checkpoint`): a file that holds
anything but tensors and plain data is refused, never executed.

Three reference key layouts are understood (after stripping ``module.`` prefixes):

``"act"`` (ACT Stage II)
    the student under ``ACT_encoder.`` (``cls_token``, ``cls_pos``, ``encoder.*``,
    ``pos_embed.*``, ``blocks.blocks.{i}.*``, ``norm.*``; unused heads ``lm_head.*`` and
    ``cls_head.*``); decoder ``mask_token``, ``decoder_pos_embed.*``, ``ACT_decoder.*``,
    ``proj_head.*``; the teacher under ``dvae_tokenizer.*`` (ignored).
``"pointmae"`` (Point-MAE pretraining)
    the same backbone under ``MAE_encoder.`` but *without* ``cls_token``/``cls_pos``;
    decoder ``MAE_decoder.*`` and a point head ``increase_dim.0`` (Conv1d D→3k).
``"classifier"`` (a fine-tuned classifier of either code base)
    bare backbone keys plus ``cls_head_finetune.{0,1,4,5,8}.*``.

Mapping onto act3d modules is a prefix change plus ``blocks.blocks.{i}`` → ``blocks.{i}``,
``*_decoder.blocks.{i}`` → ``decoder.{i}``, ``*_decoder.norm`` → ``decoder_norm``; Conv1d heads
(kernel 1) become the ``proj_head`` Linear. Every shape is checked against a freshly built
act3d model. The encoder size is inferred from the weights (``embed_dim``, ``depth``,
``mlp_ratio``, ``qkv_bias``); the number of heads is not stored in any weight and is assumed
(6 for 384-d, the paper's) unless given.

Outputs (:func:`convert_file`): ``--kind student`` writes the backbone in act3d's encoder
format (:func:`act3d.models.encoder_api.load_encoder`, ``act3d finetune --init``);
``classifier`` writes the fine-tune format (:func:`act3d.train.finetune.load_classifier`);
``mpm`` writes the whole masked point model (student + decoder) in the ``act3d.mpm`` format
of :func:`save_mpm` / :func:`load_mpm`.

The reverse, :func:`to_reference` / :func:`export_reference`, writes ``{"base_model": ...}``
in a reference layout with plain tensors only.

CLI::

    act3d convert IN.pth OUT.safetensors [--kind auto|student|classifier|mpm]
                  [--config paper|small|tiny|JSON] [--heads N] [--strict]
    act3d convert --to-reference IN.safetensors OUT.pth [--layout act|pointmae|classifier]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from act3d.checkpoint import (
    CheckpointError,
    atomic_path,
    load_weights,
    read_weights_metadata,
    save_weights,
)
from act3d.models.classifier import CLASSIFIER_MODES, PointClassifier
from act3d.models.mpm import MaskedPointModel, MPMConfig
from act3d.models.student import ENCODER_PRESETS, EncoderConfig, PointEncoder

__all__ = [
    "CONVERT_KINDS",
    "MPM_FORMAT",
    "REFERENCE_LAYOUTS",
    "ConversionResult",
    "convert_file",
    "convert_reference",
    "export_reference",
    "extract_state_dict",
    "load_mpm",
    "load_reference_checkpoint",
    "register",
    "save_mpm",
    "to_reference",
]

CONVERT_KINDS = ("auto", "student", "classifier", "mpm")
REFERENCE_LAYOUTS = ("act", "pointmae", "classifier")
MPM_FORMAT = "act3d.mpm"
_MPM_FORMAT_VERSION = "1"

_ENCODER_PREFIX = {"act": "ACT_encoder.", "pointmae": "MAE_encoder.", "classifier": ""}
_DECODER_PREFIX = {"act": "ACT_decoder.", "pointmae": "MAE_decoder."}
# Reference masking ratios of the pretraining runs (not stored in the weights).
_MASK_RATIO = {"act": 0.8, "pointmae": 0.6}
_CONTAINER_KEYS = ("base_model", "model", "state_dict")
_HEAD_PREFIX = "cls_head_finetune."
_TEACHER_PREFIX = "dvae_tokenizer."
# Backbone keys a reference file may lack: Point-MAE has no cls token; very old BN
# state dicts have no counter. They are filled from a fresh, seeded act3d initialisation.
_TOLERATED_MISSING = re.compile(r"(cls_token|cls_pos|.*\.num_batches_tracked)")
_INIT_SEED = 0

_BACKBONE_PATTERNS = (
    re.compile(r"cls_token|cls_pos"),
    re.compile(r"encoder\.(first_conv|second_conv)\.\d+\.[A-Za-z_]+"),
    re.compile(r"pos_embed\.\d+\.[A-Za-z_]+"),
    re.compile(r"norm\.[A-Za-z_]+"),
)
_REF_BLOCK = re.compile(r"blocks\.blocks\.(\d+)\.(.+)")
_OWN_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_OWN_DECODER_BLOCK = re.compile(r"decoder\.(\d+)\.(.+)")
_UNUSED_ENCODER_HEADS = ("lm_head.", "cls_head.")


# ----------------------------------------------------------------------------- reading


def load_reference_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a reference ``.pth`` with ``torch.load(weights_only=True)`` on the CPU.

    Args:
        path: the checkpoint file.

    Returns:
        The unpickled top-level dict (e.g. ``{"base_model": ..., "optimizer": ..., ...}``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated or corrupt, holds objects other than tensors
            and plain data (a pickle that would run code is refused, never executed), or is
            not a dict. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickling_detail(err)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"refusing to load {path}: it holds objects other than tensors and plain data, "
                f"which torch.load(weights_only=True) does not allow ({detail}); nothing in it "
                "was executed"
            ) from err
        raise CheckpointError(
            f"cannot read {path}: corrupt, or not a checkpoint torch.load(weights_only=True) "
            f"can read ({detail})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        reason = str(err) or type(err).__name__
        raise CheckpointError(f"corrupt or truncated checkpoint file {path}: {reason}") from err
    if not isinstance(checkpoint, dict):
        kind = type(checkpoint).__name__
        raise CheckpointError(f"checkpoint file {path} holds a {kind}, not a dict")
    return checkpoint


def _unpickling_detail(err: BaseException) -> str:
    """The weights-only unpickler's reason, without torch's advice on bypassing it."""
    text = " ".join(str(err).split())
    match = re.search(
        r"WeightsUnpickler error:\s*(.+?)(?:\.\s*Please use|\s*Check the documentation|$)", text
    )
    return match[1].strip() if match else (text[:200] or type(err).__name__)


def extract_state_dict(
    checkpoint: Mapping[str, Any], source: str = "checkpoint"
) -> dict[str, Tensor]:
    """The model weights of a reference checkpoint, ``module.`` prefixes stripped.

    Takes ``checkpoint["base_model"]`` (else ``"model"``, else ``"state_dict"``), or the
    dict itself when it holds tensors only.

    Args:
        checkpoint: what :func:`load_reference_checkpoint` returned, or a state dict.
        source: the file name, for error messages.

    Raises:
        ValueError: no state dict found, a non-tensor value, or two keys that collide once
            ``module.`` is stripped.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: expected a dict, got {type(checkpoint).__name__}")
    state: Any = checkpoint
    for name in _CONTAINER_KEYS:
        if isinstance(checkpoint.get(name), Mapping):
            state = checkpoint[name]
            break
    else:
        if not all(isinstance(v, Tensor) for v in checkpoint.values()):
            raise ValueError(
                f"{source}: no {' / '.join(repr(k) for k in _CONTAINER_KEYS)} entry, and the "
                f"dict is not a state dict (top-level keys: {sorted(map(str, checkpoint))[:12]})"
            )
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: state dict key {key!r} is not a string")
        if not isinstance(value, Tensor):
            raise ValueError(
                f"{source}: state dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name in out:
            raise ValueError(
                f"{source}: key {key!r} collides with another as {name!r} once 'module.' is stripped"
            )
        out[name] = value
    if not out:
        raise ValueError(f"{source}: the state dict is empty")
    return out


# ----------------------------------------------------------------------------- key maps


def _backbone_key(sub: str) -> str | None:
    """act3d :class:`PointEncoder` key of a reference backbone key (prefix removed)."""
    match = _REF_BLOCK.fullmatch(sub)
    if match:
        return f"blocks.{match[1]}.{match[2]}"
    if any(p.fullmatch(sub) for p in _BACKBONE_PATTERNS):
        return sub
    return None


def _reference_backbone_key(own: str) -> str:
    """Reference backbone key (prefix removed) of an act3d :class:`PointEncoder` key."""
    match = _OWN_BLOCK.fullmatch(own)
    return f"blocks.blocks.{match[1]}.{match[2]}" if match else own


def _decoder_key(key: str) -> str | None:
    """act3d :class:`MaskedPointModel` decoder key of a top-level reference key."""
    if key == "mask_token" or re.fullmatch(r"decoder_pos_embed\.\d+\.[A-Za-z_]+", key):
        return key
    for prefix in _DECODER_PREFIX.values():
        if key.startswith(prefix):
            sub = key[len(prefix):]
            match = re.fullmatch(r"blocks\.(\d+)\.(.+)", sub)
            if match:
                return f"decoder.{match[1]}.{match[2]}"
            if re.fullmatch(r"norm\.[A-Za-z_]+", sub):
                return f"decoder_{sub}"
            return None
    match = re.fullmatch(r"(?:proj_head(?:\.0)?|increase_dim\.0)\.(weight|bias)", key)
    return f"proj_head.{match[1]}" if match else None


def _count_backbone(state: Mapping[str, Tensor], prefix: str) -> int:
    return sum(1 for k in state if k.startswith(prefix) and _backbone_key(k[len(prefix):]) is not None)


def _detect_layout(state: Mapping[str, Tensor], source: str) -> str:
    counts = {layout: _count_backbone(state, prefix) for layout, prefix in _ENCODER_PREFIX.items()}
    layout = max(REFERENCE_LAYOUTS, key=lambda name: counts[name])
    if counts[layout] == 0:
        prefixes = ", ".join(repr(p) for p in _ENCODER_PREFIX.values() if p)
        raise ValueError(
            f"{source}: no backbone key maps onto the act3d student. Looked for keys under the "
            f"prefixes {prefixes} and bare fine-tuned keys ('cls_token', 'cls_pos', "
            "'encoder.first_conv.*', 'encoder.second_conv.*', 'pos_embed.*', "
            f"'blocks.blocks.N.*', 'norm.*'); first keys found: {sorted(state)[:8]}"
        )
    return layout


# ----------------------------------------------------------------------------- config


def _resolve_base_config(
    config: str | EncoderConfig | Mapping[str, Any] | None,
) -> tuple[dict[str, Any], bool]:
    """(fields, complete): a full config (preset / EncoderConfig) or partial overrides."""
    if config is None:
        return {}, False
    if isinstance(config, EncoderConfig):
        return config.to_dict(), True
    if isinstance(config, str):
        return EncoderConfig.preset(config).to_dict(), True
    if isinstance(config, Mapping):
        valid = set(EncoderConfig().to_dict())
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(f"unknown EncoderConfig keys {unknown}; valid keys: {sorted(valid)}")
        return dict(config), False
    raise ValueError(
        f"config must be a preset name {sorted(ENCODER_PRESETS)}, an EncoderConfig or a dict, "
        f"got {type(config).__name__}"
    )


def _default_heads(embed_dim: int, depth: int) -> int:
    """Heads when nothing says: 6 for 384-d (paper), a matching act3d preset, else 64-d heads."""
    if embed_dim == 384:
        return 6
    for preset in ENCODER_PRESETS.values():
        if preset["embed_dim"] == embed_dim and preset["depth"] == depth:
            return int(preset["num_heads"])
    if embed_dim % 64 == 0:
        return embed_dim // 64
    raise ValueError(
        f"cannot choose a number of attention heads for embed_dim {embed_dim} (heads are not "
        "stored in the weights); pass heads= / --heads"
    )


def _infer_encoder_fields(backbone: Mapping[str, Tensor], source: str) -> dict[str, Any]:
    """embed_dim, depth, mlp_ratio and qkv_bias from act3d-keyed backbone tensors."""
    for key in ("norm.weight", "pos_embed.2.weight", "cls_token", "blocks.0.norm1.weight"):
        if key in backbone:
            embed_dim = int(backbone[key].shape[-1 if key == "cls_token" else 0])
            break
    else:
        raise ValueError(
            f"{source}: cannot infer embed_dim: no 'norm.weight', 'pos_embed.2.weight' or 'cls_token'"
        )
    indices = sorted({int(m[1]) for k in backbone if (m := _OWN_BLOCK.fullmatch(k))})
    if not indices:
        raise ValueError(f"{source}: no Transformer block keys ('blocks.blocks.N.*') found")
    if indices != list(range(len(indices))):
        raise ValueError(f"{source}: Transformer block indices are not 0..N-1: {indices}")
    fc1 = backbone.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise ValueError(
            f"{source}: missing 'blocks.blocks.0.mlp.fc1.weight'; cannot infer the MLP width"
        )
    return {
        "embed_dim": embed_dim,
        "depth": len(indices),
        "mlp_ratio": float(fc1.shape[0]) / embed_dim,
        "qkv_bias": any(k.endswith("attn.qkv.bias") for k in backbone),
    }


def _merge_config(
    inferred: Mapping[str, Any],
    config: str | EncoderConfig | Mapping[str, Any] | None,
    heads: int | None,
    source: str,
    notes: list[str],
) -> EncoderConfig:
    base, complete = _resolve_base_config(config)
    for name, value in inferred.items():
        if name in base and base[name] != value:
            raise ValueError(
                f"{source}: the config says {name}={base[name]!r} but the weights have "
                f"{name}={value!r}"
            )
    fields = {**EncoderConfig().to_dict(), **base, **inferred}
    if heads is not None:
        fields["num_heads"] = heads
    elif "num_heads" not in base:
        fields["num_heads"] = _default_heads(fields["embed_dim"], fields["depth"])
        notes.append(
            f"num_heads={fields['num_heads']} assumed (heads are not stored in the weights; "
            "pass --heads / --config if the checkpoint used another value)"
        )
    if not complete and "num_groups" not in base:
        notes.append(
            f"num_groups={fields['num_groups']}, group_size={fields['group_size']} (grouping is "
            "not stored in the weights; 64 for 1k points, 128 for ScanObjectNN)"
        )
    try:
        return EncoderConfig.from_dict(fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: bad encoder config: {err}") from err


# ----------------------------------------------------------------------------- import


@dataclass(frozen=True)
class ConversionResult:
    """A reference checkpoint mapped onto an act3d model.

    Attributes:
        kind: ``"student"`` (:class:`PointEncoder`), ``"classifier"``
            (:class:`PointClassifier`) or ``"mpm"`` (:class:`MaskedPointModel`).
        layout: the reference layout found: ``"act"``, ``"pointmae"`` or ``"classifier"``.
        encoder_config: the backbone's size (inferred; heads assumed unless given).
        state_dict: every tensor of the act3d model, keyed like its ``state_dict()``
            (copies: nothing aliases the input dict).
        missing: act3d keys the file lacks, filled from a fresh seeded initialisation
            (e.g. ``cls_token``/``cls_pos`` of a Point-MAE file).
        unexpected: reference keys that map onto nothing (dropped).
        ignored: reference keys deliberately dropped: the teacher, unused pretraining heads,
            and the decoder or classification head when the kind does not keep them.
        notes: assumptions made (values no weight determines).
        num_classes: classifier outputs (classifier kind only).
        classifier_mode: ``"full"``, ``"mlp3"`` or ``"linear"`` (classifier kind only).
        head_hidden: hidden width of the MLP head (classifier kind only; 0 for linear).
        mpm_config: the masked point model's config (mpm kind only).
    """

    kind: str
    layout: str
    encoder_config: EncoderConfig
    state_dict: dict[str, Tensor]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    notes: tuple[str, ...] = ()
    num_classes: int | None = None
    classifier_mode: str | None = None
    head_hidden: int | None = None
    mpm_config: MPMConfig | None = None
    source: str = field(default="state dict", compare=False)
    _model: nn.Module | None = field(default=None, repr=False, compare=False)

    def build_model(self) -> nn.Module:
        """A new act3d model holding these weights (its own copy), in eval mode."""
        if self._model is not None:
            return copy.deepcopy(self._model).eval()
        model = _skeleton(self)
        state = {k: v.clone() for k, v in self.state_dict.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()

    def summary(self) -> str:
        """A few human-readable lines: what mapped, what did not, what was assumed."""
        lines = [
            f"{self.source}: reference layout {self.layout!r} -> act3d {self.kind}",
            f"  encoder: {json.dumps(self.encoder_config.to_dict(), sort_keys=True)}",
            f"  mapped tensors: {len(self.state_dict) - len(self.missing)} of {len(self.state_dict)}",
        ]
        if self.kind == "classifier":
            lines.append(f"  head: {self.classifier_mode}, {self.num_classes} classes")
        if self.mpm_config is not None:
            lines.append(
                f"  decoder: {self.mpm_config.decoder_depth} blocks, target {self.mpm_config.target!r}, "
                f"mask_ratio {self.mpm_config.mask_ratio}"
            )
        lines.append(f"  missing (fresh init): {list(self.missing) if self.missing else 'none'}")
        unexpected = _group_keys(self.unexpected) if self.unexpected else "none"
        lines.append(f"  unexpected (dropped): {unexpected}")
        lines.append(f"  ignored: {_group_keys(self.ignored) if self.ignored else 'none'}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _group_keys(keys: Sequence[str]) -> str:
    """``prefix.* (n)`` groups, for summaries of long key lists."""
    groups: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        groups[".".join(parts[:2]) + ".*" if len(parts) > 2 else key] += 1
    return ", ".join(f"{name} ({n})" if n > 1 else name for name, n in sorted(groups.items()))


def _skeleton(result: ConversionResult) -> nn.Module:
    """The act3d model of ``result``'s kind, built with a fixed seed (the global RNG is left
    untouched); its tensors are then replaced by the converted ones (``assign=True``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        return _build(result)


def _fresh_value(like: Tensor, generator: torch.Generator) -> Tensor:
    """A tolerated missing tensor: trunc-normal (std 0.02) like the reference's cls token,
    zeros for integer buffers (BN counters)."""
    if like.dtype.is_floating_point:
        value = torch.empty(like.shape, dtype=like.dtype)
        return nn.init.trunc_normal_(value, std=0.02, generator=generator)
    return torch.zeros(like.shape, dtype=like.dtype)


def _build(result: ConversionResult) -> nn.Module:
    if result.kind == "student":
        return PointEncoder(result.encoder_config)
    if result.kind == "classifier":
        assert result.num_classes is not None and result.classifier_mode is not None
        return PointClassifier(
            result.encoder_config,
            result.num_classes,
            mode=result.classifier_mode,
            head_hidden=result.head_hidden or 256,
        )
    assert result.mpm_config is not None
    return MaskedPointModel(result.mpm_config)


def _classifier_head(
    head: Mapping[str, Tensor], mode: str | None, source: str, notes: list[str]
) -> tuple[int, str, int]:
    """(num_classes, mode, hidden) from ``cls_head_finetune`` keys (prefix removed)."""
    indices = sorted({int(k.split(".")[0]) for k in head if k.split(".")[0].isdigit()})
    if indices == [0]:
        found = "linear"
        num_classes, hidden = int(head["0.weight"].shape[0]), 0
    elif indices == [0, 1, 4, 5, 8]:
        found = "full"
        if "8.weight" not in head or "0.weight" not in head:
            raise ValueError(f"{source}: classification head lacks 'cls_head_finetune.0/8.weight'")
        num_classes, hidden = int(head["8.weight"].shape[0]), int(head["0.weight"].shape[0])
    else:
        raise ValueError(
            f"{source}: classification head modules {indices} are neither a linear head [0] "
            "nor the mlp-3 head [0, 1, 4, 5, 8]"
        )
    if mode is None:
        if found == "full":
            notes.append("classifier mode 'full' assumed ('full' and 'mlp3' have the same weights)")
        return num_classes, found, hidden
    if (mode == "linear") != (found == "linear"):
        raise ValueError(
            f"{source}: mode {mode!r} does not match the head in the file ({found} layout)"
        )
    return num_classes, mode, hidden


def _tolerated_missing(key: str, own_prefix: str) -> bool:
    """A key the reference may lack: the cls token of Point-MAE, a BN counter."""
    sub = key[len(own_prefix):] if key.startswith(own_prefix) else key
    return _TOLERATED_MISSING.fullmatch(sub) is not None


def _conv_to_linear(
    value: Tensor, ref_key: str, target_shape: tuple[int, ...], source: str
) -> Tensor:
    """A Conv1d kernel-1 weight (out, in, 1) used as a Linear weight (out, in)."""
    if value.ndim == 3 and value.shape[-1] == 1 and len(target_shape) == 2:
        return value[..., 0]
    if value.ndim == 3:
        raise ValueError(
            f"{source}: {ref_key!r} has shape {tuple(value.shape)}; expected a kernel-1 "
            "Conv1d weight"
        )
    return value


def convert_reference(
    state_dict: Mapping[str, Any],
    kind: str = "auto",
    *,
    config: str | EncoderConfig | Mapping[str, Any] | None = None,
    heads: int | None = None,
    mode: str | None = None,
    strict: bool = False,
    source: str = "state dict",
) -> ConversionResult:
    """Map a reference state dict onto an act3d model, checking every key and shape.

    Args:
        state_dict: reference tensors (a checkpoint dict with ``base_model`` / ``model`` /
            ``state_dict`` is unwrapped; ``module.`` prefixes are stripped).
        kind: ``"auto"`` (classifier when a ``cls_head_finetune`` is present, else
            student), ``"student"`` (backbone only), ``"classifier"`` or ``"mpm"``
            (backbone + decoder of a pretraining checkpoint).
        config: the encoder's size: a preset name (``paper``, ``small``, ``tiny``), an
            :class:`EncoderConfig`, or a dict of fields (e.g. ``{"num_groups": 128}``).
            Sizes that the weights determine must agree with it.
        heads: attention heads (overrides ``config``; default 6 for 384-d).
        mode: classifier mode (``"full"``/``"mlp3"``/``"linear"``); default from the head.
        strict: any missing or unexpected backbone key raises instead of being reported.
        source: the file name, for messages.

    Returns:
        A :class:`ConversionResult`; ``result.build_model()`` gives the loaded model.

    Raises:
        ValueError: no backbone key maps (the message lists the prefixes looked for), an
            incomplete backbone, a shape mismatch (naming both keys and shapes), a kind the
            file cannot provide, or (strict) any missing/unexpected key.
    """
    if kind not in CONVERT_KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid choices: {list(CONVERT_KINDS)}")
    state = extract_state_dict(state_dict, source)
    layout = _detect_layout(state, source)
    prefix = _ENCODER_PREFIX[layout]
    notes: list[str] = []

    backbone: dict[str, tuple[str, Tensor]] = {}  # act3d key -> (reference key, tensor)
    head: dict[str, Tensor] = {}
    decoder: dict[str, tuple[str, Tensor]] = {}
    roles: dict[str, str] = {}  # reference key -> why it was ignored / "unexpected"
    for key, value in state.items():
        if key.startswith(prefix) and (own := _backbone_key(key[len(prefix):])) is not None:
            backbone[own] = (key, value)
        elif layout == "classifier" and key.startswith(_HEAD_PREFIX):
            head[key[len(_HEAD_PREFIX):]] = value
        elif key.startswith(_TEACHER_PREFIX):
            roles[key] = "teacher"
        elif prefix and key.startswith(prefix) and key[len(prefix):].startswith(_UNUSED_ENCODER_HEADS):
            roles[key] = "unused head"
        elif layout != "classifier" and (own := _decoder_key(key)) is not None:
            if own in decoder:
                raise ValueError(
                    f"{source}: keys {decoder[own][0]!r} and {key!r} both map onto act3d {own!r}"
                )
            decoder[own] = (key, value)
        else:
            roles[key] = "unexpected"

    has_decoder = any(k.startswith("decoder.") for k in decoder) and "proj_head.weight" in decoder
    if kind == "auto":
        kind = "classifier" if head else "student"
    if kind == "classifier" and not head:
        raise ValueError(
            f"{source}: --kind classifier needs a fine-tuned classifier ('cls_head_finetune.*' "
            f"keys); this file has the {layout!r} layout without one"
        )
    if kind == "mpm" and not has_decoder:
        raise ValueError(
            f"{source}: --kind mpm needs a pretraining checkpoint with a decoder "
            f"('ACT_decoder.*' or 'MAE_decoder.*' and 'proj_head'/'increase_dim'); none in this "
            f"{layout!r} file"
        )
    if kind != "classifier":
        roles.update({f"{_HEAD_PREFIX}{k}": "classifier head" for k in head})
    if kind != "mpm":
        roles.update({ref: "decoder" for ref, _ in decoder.values()})

    inferred = _infer_encoder_fields({k: v for k, (_, v) in backbone.items()}, source)
    mpm_fields: dict[str, Any] = {}
    if kind == "mpm":
        proj_out = int(decoder["proj_head.weight"][1].shape[0])
        points_head = decoder["proj_head.weight"][0].startswith("increase_dim.")
        if points_head:
            if proj_out % 3:
                raise ValueError(f"{source}: point head output {proj_out} is not a multiple of 3")
            inferred["group_size"] = proj_out // 3
        decoder_blocks = {int(m[1]) for k in decoder if (m := _OWN_DECODER_BLOCK.fullmatch(k))}
        mpm_fields = {
            "mask_ratio": _MASK_RATIO.get(layout, 0.8),
            "decoder_depth": len(decoder_blocks),
            "target": "points" if points_head else "latent",
            "target_dim": 384 if points_head else proj_out,
        }
        notes.append(
            f"mask_ratio={mpm_fields['mask_ratio']} (the {layout} reference's; not stored in the "
            "weights); decoder heads = encoder heads"
        )
    encoder_config = _merge_config(inferred, config, heads, source, notes)

    result_fields: dict[str, Any] = {}
    if kind == "classifier":
        num_classes, mode, hidden = _classifier_head(head, mode, source, notes)
        result_fields = {"num_classes": num_classes, "classifier_mode": mode, "head_hidden": hidden}
    elif mode is not None:
        raise ValueError(f"mode applies to --kind classifier only, not {kind!r}")
    mpm_config = None
    if kind == "mpm":
        try:
            mpm_config = MPMConfig(encoder=encoder_config, **mpm_fields)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    # act3d key -> (reference key, tensor), in the target model's naming
    own_prefix = {"student": "", "classifier": "backbone.", "mpm": "student."}[kind]
    mapped: dict[str, tuple[str, Tensor]] = {own_prefix + k: v for k, v in backbone.items()}
    if kind == "classifier":
        mapped.update({f"{_HEAD_PREFIX}{k}": (f"{_HEAD_PREFIX}{k}", v) for k, v in head.items()})
    if kind == "mpm":
        mapped.update(decoder)

    draft = ConversionResult(
        kind, layout, encoder_config, {}, (), (), (), mpm_config=mpm_config, **result_fields
    )
    model = _skeleton(draft)
    fresh = model.state_dict()  # names, shapes and dtypes only

    state_out: dict[str, Tensor] = {}
    for own, (ref_key, value) in mapped.items():
        if own not in fresh:
            roles[ref_key] = "unexpected"
            continue
        target = fresh[own]
        if own.endswith("proj_head.weight"):
            value = _conv_to_linear(value, ref_key, tuple(target.shape), source)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{source}: shape mismatch: reference {ref_key!r} has {tuple(value.shape)}, "
                f"act3d {own!r} expects {tuple(target.shape)}"
            )
        state_out[own] = value.detach().to(dtype=target.dtype)

    missing = tuple(k for k in fresh if k not in state_out)
    unexpected = tuple(sorted(k for k, role in roles.items() if role == "unexpected"))
    ignored = tuple(sorted(k for k, role in roles.items() if role != "unexpected"))
    fatal = [k for k in missing if not _tolerated_missing(k, own_prefix)]
    if fatal:
        raise ValueError(
            f"{source}: the {layout!r} checkpoint lacks act3d keys {fatal[:12]}"
            f"{' ...' if len(fatal) > 12 else ''} ({len(fatal)} in all); refusing to fill them "
            "with random weights"
        )
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source}: strict conversion failed; act3d keys missing from the file: {list(missing)}; "
            f"reference keys that map onto nothing: {list(unexpected)}"
        )
    generator = torch.Generator().manual_seed(_INIT_SEED)
    for key in missing:
        state_out[key] = _fresh_value(fresh[key], generator)
        if key.endswith(("cls_token", "cls_pos")):
            notes.append(
                f"{key!r} is not in the {layout!r} file; initialised (trunc-normal std 0.02, "
                f"seed {_INIT_SEED})"
            )
    # contiguous copies: nothing aliases the input
    state_out = {k: state_out[k].clone(memory_format=torch.contiguous_format) for k in fresh}
    model.load_state_dict(state_out, strict=True, assign=True)
    return ConversionResult(
        kind=kind,
        layout=layout,
        encoder_config=encoder_config,
        state_dict=dict(model.state_dict()),
        missing=missing,
        unexpected=unexpected,
        ignored=ignored,
        notes=tuple(notes),
        mpm_config=mpm_config,
        source=source,
        _model=model.eval(),
        **result_fields,
    )


# ----------------------------------------------------------------------------- act3d mpm files


def save_mpm(
    model: MaskedPointModel,
    path: str | os.PathLike[str],
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write a whole masked point model (student + decoder) to ``path`` atomically.

    Metadata: ``{"format": "act3d.mpm", "format_version": "1", "mpm_config": "<JSON>"}``
    plus ``extra``.
    """
    if not isinstance(model, MaskedPointModel):
        raise ValueError(f"model must be a MaskedPointModel, got {type(model).__name__}")
    meta = {
        "format": MPM_FORMAT,
        "format_version": _MPM_FORMAT_VERSION,
        "mpm_config": json.dumps(model.config.to_dict(), sort_keys=True),
        **dict(extra or {}),
    }
    return save_weights(model.state_dict(), path, meta)


def load_mpm(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> MaskedPointModel:
    """Load a file written by :func:`save_mpm`; every key and shape is checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``act3d.mpm`` file, bad metadata, or keys that do not match.
    """
    path = Path(path)
    meta = read_weights_metadata(path)
    if meta.get("format") != MPM_FORMAT:
        raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected {MPM_FORMAT!r}")
    try:
        config = MPMConfig.from_dict(json.loads(meta["mpm_config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad 'mpm_config' metadata ({err})") from err
    model = MaskedPointModel(config)
    state = load_weights(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match; missing: {missing}; unexpected: {unexpected}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{path}: shape mismatch for {key!r}: file {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval()


def convert_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    kind: str = "auto",
    *,
    config: str | EncoderConfig | Mapping[str, Any] | None = None,
    heads: int | None = None,
    mode: str | None = None,
    strict: bool = False,
    class_names: Sequence[str] | None = None,
    num_points: int = 1024,
) -> ConversionResult:
    """Convert a reference ``.pth`` into an act3d ``.safetensors`` file.

    Args:
        src: the reference checkpoint (read with ``weights_only=True``).
        dst: the output file: an ``act3d.encoder`` file (student), an ``act3d.classifier``
            file (classifier) or an ``act3d.mpm`` file (mpm).
        kind, config, heads, mode, strict: see :func:`convert_reference`.
        class_names: class names stored with a classifier (must number ``num_classes``).
        num_points: the input size stored with a classifier (1024 ModelNet, 2048 ScanObjectNN).

    Returns:
        The :class:`ConversionResult` (its ``summary()`` says what mapped).
    """
    src = Path(src)
    checkpoint = load_reference_checkpoint(src)
    result = convert_reference(
        checkpoint, kind, config=config, heads=heads, mode=mode, strict=strict, source=str(src)
    )
    model = result.build_model()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    provenance = {"converted_from": src.name, "reference_layout": result.layout}
    if result.kind == "student":
        from act3d.models.encoder_api import save_encoder

        save_encoder(model, dst)  # type: ignore[arg-type]
    elif result.kind == "classifier":
        from act3d.train.finetune import save_classifier

        names = list(class_names or [])
        if names and len(names) != result.num_classes:
            raise ValueError(
                f"{len(names)} class names given but {src} has {result.num_classes} classes"
            )
        save_classifier(
            model,  # type: ignore[arg-type]
            dst,
            class_names=names,
            source="",
            num_points=num_points,
            extra=provenance,
        )
    else:
        save_mpm(model, dst, extra=provenance)  # type: ignore[arg-type]
    return result


# ----------------------------------------------------------------------------- export


def _model_state(model: nn.Module | Mapping[str, Tensor]) -> tuple[str, dict[str, Tensor]]:
    """(kind, act3d state dict) of a model or of a state dict keyed like one."""
    if isinstance(model, PointClassifier):
        return "classifier", dict(model.state_dict())
    if isinstance(model, MaskedPointModel):
        return "mpm", dict(model.state_dict())
    if isinstance(model, PointEncoder):
        return "student", dict(model.state_dict())
    if isinstance(model, nn.Module):
        raise ValueError(
            f"cannot export a {type(model).__name__}; expected a PointEncoder, PointClassifier "
            "or MaskedPointModel (or a state dict of one)"
        )
    if not isinstance(model, Mapping):
        raise ValueError(f"expected a model or a state dict, got {type(model).__name__}")
    state = dict(model)
    if any(k.startswith("backbone.") for k in state):
        return "classifier", state
    if any(k.startswith("student.") for k in state):
        return "mpm", state
    return "student", state


def to_reference(
    model: nn.Module | Mapping[str, Tensor],
    layout: str = "act",
    *,
    module_prefix: bool = False,
) -> dict[str, Tensor]:
    """An act3d model's weights in a reference key layout (plain CPU tensors).

    Args:
        model: a :class:`PointEncoder`, :class:`PointClassifier` or
            :class:`MaskedPointModel`, or a state dict keyed like one of them.
        layout: ``"act"`` (``ACT_encoder.*``; a masked point model adds
            ``mask_token``, ``decoder_pos_embed``, ``ACT_decoder.*``, ``proj_head``),
            ``"pointmae"`` (``MAE_encoder.*`` without the cls token, which Point-MAE does
            not have; ``MAE_decoder.*`` and ``increase_dim.0`` for a ``"points"`` target),
            or ``"classifier"`` (bare keys, plus ``cls_head_finetune.*`` for a classifier).
        module_prefix: prefix every key with ``module.`` as the reference's
            DataParallel runs save them.

    Returns:
        ``{reference key: tensor}``; wrap it as ``{"base_model": ...}`` for a ``.pth``.

    Raises:
        ValueError: an unknown layout, or a model the layout cannot hold (a classifier head
            outside the ``"classifier"`` layout, a decoder in it, a ``"latent"`` head in
            ``"pointmae"``), or a key that is not an act3d one.
    """
    if layout not in REFERENCE_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid choices: {list(REFERENCE_LAYOUTS)}")
    kind, state = _model_state(model)
    if isinstance(model, MaskedPointModel) and layout == "pointmae" and model.config.target != "points":
        raise ValueError(
            f"layout 'pointmae' holds a point-reconstruction head (increase_dim); this model's "
            f"target is {model.config.target!r}: export it with layout 'act'"
        )
    if kind == "classifier" and layout != "classifier":
        raise ValueError(f"a classifier exports to layout 'classifier' only, not {layout!r}")
    if kind == "mpm" and layout == "classifier":
        raise ValueError(
            "layout 'classifier' has no decoder; export a masked point model as 'act' or "
            "'pointmae'"
        )
    own_prefix = {"student": "", "classifier": "backbone.", "mpm": "student."}[kind]
    enc_prefix = _ENCODER_PREFIX[layout]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        value = value.detach().cpu().contiguous().clone()
        sub = key[len(own_prefix):] if key.startswith(own_prefix) else None
        if sub is not None and _backbone_key(_reference_backbone_key(sub)) is not None:
            if layout == "pointmae" and sub in ("cls_token", "cls_pos"):
                continue
            out[enc_prefix + _reference_backbone_key(sub)] = value
        elif kind == "classifier" and key.startswith(_HEAD_PREFIX):
            out[key] = value
        elif kind == "mpm":
            out.update(_reference_decoder_item(key, value, layout))
        else:
            raise ValueError(f"key {key!r} is not part of an act3d {kind} state dict")
    if module_prefix:
        out = {f"module.{k}": v for k, v in out.items()}
    return out


def _reference_decoder_item(key: str, value: Tensor, layout: str) -> dict[str, Tensor]:
    dec = _DECODER_PREFIX[layout]
    if key == "mask_token" or key.startswith("decoder_pos_embed."):
        return {key: value}
    if match := re.fullmatch(r"decoder\.(\d+)\.(.+)", key):
        return {f"{dec}blocks.{match[1]}.{match[2]}": value}
    if match := re.fullmatch(r"decoder_norm\.(.+)", key):
        return {f"{dec}norm.{match[1]}": value}
    if match := re.fullmatch(r"proj_head\.(weight|bias)", key):
        if layout == "act":
            return {key: value}
        if match[1] == "weight":
            value = value.unsqueeze(-1)
        return {f"increase_dim.0.{match[1]}": value}
    raise ValueError(f"key {key!r} is not part of an act3d masked point model")


def _load_act3d_file(path: Path) -> nn.Module:
    meta = read_weights_metadata(path)
    fmt = meta.get("format")
    from act3d.models.encoder_api import ENCODER_FORMAT, load_encoder
    from act3d.train.finetune import CLASSIFIER_FORMAT, load_classifier

    if fmt == ENCODER_FORMAT:
        return load_encoder(path)
    if fmt == CLASSIFIER_FORMAT:
        return load_classifier(path)
    if fmt == MPM_FORMAT:
        return load_mpm(path)
    raise ValueError(
        f"{path}: metadata format {fmt!r} is not one act3d can export; expected "
        f"{ENCODER_FORMAT!r}, {CLASSIFIER_FORMAT!r} or {MPM_FORMAT!r}"
    )


def export_reference(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    layout: str | None = None,
    *,
    module_prefix: bool = False,
) -> dict[str, Tensor]:
    """Write an act3d ``.safetensors`` (encoder, classifier or mpm) as a reference ``.pth``.

    The file is ``torch.save({"base_model": state_dict})`` of plain tensors, written
    atomically, so ``torch.load(weights_only=True)`` reads it.

    Args:
        src: an act3d weights file.
        dst: the ``.pth`` to write.
        layout: see :func:`to_reference`; default ``"classifier"`` for a classifier and
            ``"act"`` otherwise.
        module_prefix: prefix keys with ``module.``.

    Returns:
        The reference state dict written.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no act3d weights file at {src}")
    model = _load_act3d_file(src)
    if layout is None:
        layout = "classifier" if isinstance(model, PointClassifier) else "act"
    state = to_reference(model, layout, module_prefix=module_prefix)
    with atomic_path(dst) as tmp:
        torch.save({"base_model": state}, tmp)
    return state


# ----------------------------------------------------------------------------- CLI


def _parse_config(text: str | None) -> str | dict[str, Any] | None:
    if text is None:
        return None
    if text in ENCODER_PRESETS:
        return text
    if text.lstrip().startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config is not valid JSON ({err})") from err
    elif Path(text).is_file():
        try:
            values = json.loads(Path(text).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--config file {text} is not valid JSON ({err})") from err
    else:
        raise ValueError(
            f"--config {text!r} is neither a preset {sorted(ENCODER_PRESETS)}, a JSON object, "
            "nor a JSON file"
        )
    if not isinstance(values, dict):
        raise ValueError("--config JSON must be an object of EncoderConfig fields")
    return values


def _read_class_names(path: str | None) -> list[str] | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--class-names: no file at {file}")
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def _run(args: argparse.Namespace) -> int:
    if args.to_reference:
        state = export_reference(
            args.input, args.output, args.layout, module_prefix=args.module_prefix
        )
        print(f"wrote {args.output}: {{'base_model': {len(state)} tensors}} (reference layout)")
        if args.layout == "pointmae":
            print("note: cls_token and cls_pos are not written (Point-MAE's encoder has none)")
        return 0
    if args.layout is not None or args.module_prefix:
        raise ValueError("--layout and --module-prefix apply to --to-reference only")
    result = convert_file(
        args.input,
        args.output,
        args.kind,
        config=_parse_config(args.config),
        heads=args.heads,
        mode=args.mode,
        strict=args.strict,
        class_names=_read_class_names(args.class_names),
        num_points=args.num_points,
    )
    print(result.summary())
    print(f"wrote {args.output} (act3d {result.kind})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``act3d convert``."""
    parser = subparsers.add_parser(
        "convert",
        help="import a reference ACT / Point-MAE .pth, or export act3d weights to one",
        description=(
            "Import: IN.pth (read with torch.load(weights_only=True)) -> OUT.safetensors, an "
            "act3d student (encoder), classifier or masked point model. Export "
            "(--to-reference): an act3d .safetensors -> OUT.pth {'base_model': ...} in a "
            "reference key layout."
        ),
    )
    parser.add_argument("input", help="IN.pth (import) or an act3d .safetensors (--to-reference)")
    parser.add_argument("output", help="OUT.safetensors (import) or OUT.pth (--to-reference)")
    parser.add_argument(
        "--to-reference", action="store_true", help="export act3d weights to a reference .pth"
    )
    parser.add_argument(
        "--kind", default="auto", choices=CONVERT_KINDS, help="what to import (default: auto)"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="encoder size: a preset (paper, small, tiny), a JSON object or a JSON file of "
        "EncoderConfig fields, e.g. '{\"num_groups\": 128}'",
    )
    parser.add_argument(
        "--heads", type=int, default=None,
        help="attention heads (not stored in the weights; default 6 for 384-d)",
    )
    parser.add_argument(
        "--mode", default=None, choices=CLASSIFIER_MODES, help="classifier mode to record"
    )
    parser.add_argument(
        "--strict", action="store_true", help="any missing or unmapped backbone key is an error"
    )
    parser.add_argument(
        "--class-names", default=None, help="text file of class names, one a line (classifier)"
    )
    parser.add_argument(
        "--num-points", type=int, default=1024, help="input size recorded with a classifier"
    )
    parser.add_argument(
        "--layout", default=None, choices=REFERENCE_LAYOUTS,
        help="reference layout to export (default: classifier for a classifier, else act)",
    )
    parser.add_argument(
        "--module-prefix", action="store_true", help="export keys with a 'module.' prefix"
    )
    parser.set_defaults(func=_run)
