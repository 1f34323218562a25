"""ViT teachers on act3d blocks, loading timm-format weights from a local file.

ACT's reference teacher is timm's ``vit_base_patch16_384`` (ACT_SPEC §1.3). Only its
blocks and final LayerNorm are used, so a teacher here is a :class:`BlockStackTeacher`
whose state dict carries timm's names (``blocks.{i}.*``, ``norm.*``).

Three file formats are read (:func:`read_timm_state_dict`):

- ``.safetensors`` — a timm state dict;
- ``.pth`` / ``.pt`` / ``.bin`` — ``torch.load(weights_only=True)``; a dict nested under
  ``"model"`` or ``"state_dict"`` is unwrapped, a ``module.`` prefix (DDP) is dropped;
- ``.npz`` — the JAX checkpoints of google-research/vision_transformer (augreg) and
  big_vision, converted to timm names. Classic layout, block ``i``::

      Transformer/encoderblock_{i}/LayerNorm_0/{scale,bias}                -> norm1
      .../MultiHeadDotProductAttention_1/{query,key,value}/kernel (D, H, hd) -> attn.qkv
      .../MultiHeadDotProductAttention_1/{query,key,value}/bias   (H, hd)
      .../MultiHeadDotProductAttention_1/out/kernel (H, hd, D), out/bias    -> attn.proj
      .../LayerNorm_2/{scale,bias}                                          -> norm2
      .../MlpBlock_3/Dense_{0,1}/{kernel (in, out), bias}                   -> mlp.fc{1,2}
      Transformer/encoder_norm/{scale,bias}                                 -> norm

  big_vision uses ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``, ``MlpBlock_0`` and
  may stack all blocks in one ``Transformer/encoderblock/`` (leading axis = block). Keys
  may carry an ``opt/target/`` or ``params/`` prefix.

:func:`load_timm_weights` checks every key the teacher needs exists in the file with the
right shape, and that the file has no extra ``blocks.*`` / ``norm.*`` entries (more blocks,
layer scale, ...), before copying anything; keys ACT does not use (``patch_embed``,
``cls_token``, ``pos_embed``, ``head``, ...) are counted and reported, not loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from act3d.models.teachers.base import BlockStackTeacher

__all__ = [
    "TIMM_SUFFIXES",
    "VIT_VARIANTS",
    "TimmLoadReport",
    "ViTShape",
    "init_vit_weights",
    "load_timm_weights",
    "read_timm_state_dict",
    "timm_state_dict_from_npz",
    "vit_teacher",
]


@dataclass(frozen=True)
class ViTShape:
    """Shape of a ViT teacher (patch16 family: 12 blocks, MLP ratio 4, qkv bias, eps 1e-6)."""

    embed_dim: int
    num_heads: int
    depth: int = 12
    mlp_ratio: float = 4.0


VIT_VARIANTS: dict[str, ViTShape] = {
    "vit-ti": ViTShape(embed_dim=192, num_heads=3),
    "vit-s": ViTShape(embed_dim=384, num_heads=6),
    "vit-b": ViTShape(embed_dim=768, num_heads=12),
}

TIMM_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin", ".npz")

_USED_PREFIXES = ("blocks.", "norm.")


@dataclass(frozen=True)
class TimmLoadReport:
    """What :func:`load_timm_weights` did.

    Attributes:
        path: the file read.
        loaded: number of tensors copied into the teacher.
        ignored: keys of the file ACT does not use (sorted), e.g. ``patch_embed.proj.weight``.
    """

    path: str
    loaded: int
    ignored: tuple[str, ...]


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT initialisation, in place: Linear weights trunc-normal(std 0.02) with zero
    bias; LayerNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def vit_teacher(variant: str = "vit-b", *, name: str | None = None) -> BlockStackTeacher:
    """A freshly initialised ViT teacher of a patch16 shape (no weights loaded).

    Args:
        variant: one of :data:`VIT_VARIANTS` (``"vit-ti"`` 192-d/3 heads, ``"vit-s"``
            384/6, ``"vit-b"`` 768/12; all 12 blocks, qkv bias, LayerNorm eps 1e-6).
        name: identifier for logs (default: the variant).

    Returns:
        A :class:`BlockStackTeacher` with timm's initialisation; load weights with
        :func:`load_timm_weights`.
    """
    if variant not in VIT_VARIANTS:
        raise ValueError(f"unknown ViT variant {variant!r}; valid: {sorted(VIT_VARIANTS)}")
    shape = VIT_VARIANTS[variant]
    teacher = BlockStackTeacher(
        shape.embed_dim,
        shape.depth,
        shape.num_heads,
        mlp_ratio=shape.mlp_ratio,
        qkv_bias=True,
        norm_eps=1e-6,
        name=name or variant,
    )
    init_vit_weights(teacher)
    return teacher


def _npz_prefix(keys: set[str]) -> str:
    for prefix in ("", "opt/target/", "params/", "params/img/"):
        if f"{prefix}Transformer/encoder_norm/scale" in keys:
            return prefix
    raise KeyError("Transformer/encoder_norm/scale")


def timm_state_dict_from_npz(
    arrays: Mapping[str, np.ndarray], source: str = "<npz>"
) -> tuple[dict[str, Tensor], list[str]]:
    """Convert JAX ViT arrays (augreg / big_vision layout) to timm's block and norm names.

    Args:
        arrays: name -> array, as ``np.load(path)`` gives.
        source: file name for error messages.

    Returns:
        ``(state_dict, unused)``: ``blocks.{i}.*`` and ``norm.*`` tensors in timm layout
        (``qkv.weight: (3D, D)``, Linear weights ``(out, in)``), and the array names that
        were not converted (patch embedding, class token, position table, head, ...).
    """
    keys = set(arrays)
    try:
        p = _npz_prefix(keys)
    except KeyError:
        raise ValueError(
            f"{source}: no 'Transformer/encoder_norm/scale' (prefix '', 'opt/target/', "
            "'params/' or 'params/img/'): not a JAX ViT checkpoint"
        ) from None
    stacked = f"{p}Transformer/encoderblock/LayerNorm_0/scale" in keys
    big_vision = p.startswith("params/") or f"{p}pos_embedding" in keys or stacked
    if big_vision:
        mha, ln2, mlp = "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
    else:
        mha, ln2, mlp = "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"
    if stacked:
        depth = int(arrays[f"{p}Transformer/encoderblock/LayerNorm_0/scale"].shape[0])
    else:
        depth = 0
        while f"{p}Transformer/encoderblock_{depth}/LayerNorm_0/scale" in keys:
            depth += 1
    used: set[str] = set()

    def get(key: str, i: int | None = None) -> Tensor:
        if key not in keys:
            raise ValueError(f"{source}: missing array {key!r}")
        used.add(key)
        a = np.asarray(arrays[key])
        if i is not None:
            a = a[i]
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    out: dict[str, Tensor] = {}
    for i in range(depth):
        if stacked:
            bp, idx = f"{p}Transformer/encoderblock/", i
        else:
            bp, idx = f"{p}Transformer/encoderblock_{i}/", None
        t = f"blocks.{i}."
        out[t + "norm1.weight"] = get(bp + "LayerNorm_0/scale", idx)
        out[t + "norm1.bias"] = get(bp + "LayerNorm_0/bias", idx)
        q, k, v = (get(f"{bp}{mha}/{n}/kernel", idx) for n in ("query", "key", "value"))
        dim = q.shape[0]
        # kernel (D, H, hd): output feature h*hd+j from input d; timm wants (out, in)
        out[t + "attn.qkv.weight"] = torch.cat([w.reshape(dim, -1).T for w in (q, k, v)], dim=0)
        out[t + "attn.qkv.bias"] = torch.cat(
            [get(f"{bp}{mha}/{n}/bias", idx).reshape(-1) for n in ("query", "key", "value")]
        )
        o = get(f"{bp}{mha}/out/kernel", idx)  # (H, hd, D)
        out[t + "attn.proj.weight"] = o.reshape(-1, o.shape[-1]).T
        out[t + "attn.proj.bias"] = get(f"{bp}{mha}/out/bias", idx)
        out[t + "norm2.weight"] = get(f"{bp}{ln2}/scale", idx)
        out[t + "norm2.bias"] = get(f"{bp}{ln2}/bias", idx)
        for r in range(2):
            out[t + f"mlp.fc{r + 1}.weight"] = get(f"{bp}{mlp}/Dense_{r}/kernel", idx).T
            out[t + f"mlp.fc{r + 1}.bias"] = get(f"{bp}{mlp}/Dense_{r}/bias", idx)
    out["norm.weight"] = get(f"{p}Transformer/encoder_norm/scale")
    out["norm.bias"] = get(f"{p}Transformer/encoder_norm/bias")
    return {k: v.contiguous() for k, v in out.items()}, sorted(keys - used)


def _unwrap_torch_checkpoint(obj: object, source: str) -> dict[str, Tensor]:
    while isinstance(obj, Mapping):
        nested = (obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), Mapping))
        inner = next(nested, None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict, got {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def read_timm_state_dict(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """Read a timm ViT state dict from a local file.

    Args:
        path: ``.safetensors``, ``.pth``/``.pt``/``.bin`` (torch, ``weights_only``) or
            ``.npz`` (JAX augreg / big_vision, converted to timm names).

    Returns:
        ``(state_dict, extra)``: tensors by timm name, and for ``.npz`` the array names
        that have no timm block/norm counterpart (empty for the other formats, whose
        unused keys stay in the state dict).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TIMM_SUFFIXES:
        raise ValueError(
            f"{path}: unknown weight file type {suffix!r}; valid: {list(TIMM_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"timm weight file not found: {path}")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu")), []
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return timm_state_dict_from_npz(arrays, source=str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return _unwrap_torch_checkpoint(obj, str(path)), []


def load_timm_weights(teacher: BlockStackTeacher, path: str | Path) -> TimmLoadReport:
    """Copy the blocks and final norm of a timm ViT checkpoint into ``teacher``, in place.

    Every tensor of ``teacher.state_dict()`` must be in the file with the same shape, and
    the file must have no ``blocks.*`` / ``norm.*`` key the teacher lacks; otherwise a
    ``ValueError`` names the file and the key and nothing is copied.

    Args:
        teacher: e.g. from :func:`vit_teacher`.
        path: a local weight file (see :func:`read_timm_state_dict`).

    Returns:
        A :class:`TimmLoadReport` (tensors loaded, keys ignored).
    """
    sd, extra = read_timm_state_dict(path)
    target = teacher.state_dict()
    used = {k: v for k, v in sd.items() if k.startswith(_USED_PREFIXES)}
    ignored = sorted(set(sd) - set(used)) + list(extra)
    for key, ref in target.items():
        if key not in used:
            raise ValueError(
                f"{path}: missing key {key!r} (teacher expects shape {tuple(ref.shape)})"
            )
        if tuple(used[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"{path}: key {key!r} has shape {tuple(used[key].shape)}, "
                f"teacher expects {tuple(ref.shape)}"
            )
    unexpected = sorted(set(used) - set(target), key=_natural_key)
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:5])
        raise ValueError(
            f"{path}: {len(unexpected)} key(s) the teacher ({teacher.num_blocks} blocks, "
            f"dim {teacher.embed_dim}) does not have, e.g. {shown}"
        )
    with torch.no_grad():
        for key, ref in target.items():
            ref.copy_(used[key].to(dtype=ref.dtype))
    teacher.source = str(path)
    return TimmLoadReport(path=str(path), loaded=len(target), ignored=tuple(sorted(ignored)))


def _natural_key(key: str) -> list[object]:
    return [int(s) if s.isdigit() else s for s in key.replace(".", " . ").split()]
