"""Stage I teacher backbones: pretrained Transformers behind one interface.

Every teacher is a :class:`TeacherBackbone` (``embed_dim``, ``num_blocks``,
``run_block(i, x)``, ``final_norm(x)``); :func:`build_teacher` makes one from a name
(``minilm``, ``bert:PATH``, ``vit-b[:FILE]``, ``dinov2-s``, ``dinov2:PATH``,
``random:<shape>``) and :func:`available_teachers` says which names work here.
"""

from act3d.models.teachers.base import BlockStackTeacher, TeacherBackbone
from act3d.models.teachers.hf import (
    HFTeacher,
    hf_config,
    hf_teacher_from_config,
    load_bert_teacher,
    load_dinov2_teacher,
    minilm_path,
    wrap_bert,
    wrap_dinov2,
)
from act3d.models.teachers.registry import (
    DEFAULT_TEACHER,
    RANDOM_SHAPES,
    available_teachers,
    build_teacher,
    teacher_shape,
    teachers_dir,
)
from act3d.models.teachers.vit import VIT_VARIANTS, load_timm_weights, vit_teacher

__all__ = [
    "DEFAULT_TEACHER",
    "RANDOM_SHAPES",
    "VIT_VARIANTS",
    "BlockStackTeacher",
    "HFTeacher",
    "TeacherBackbone",
    "available_teachers",
    "build_teacher",
    "hf_config",
    "hf_teacher_from_config",
    "load_bert_teacher",
    "load_dinov2_teacher",
    "load_timm_weights",
    "minilm_path",
    "teacher_shape",
    "teachers_dir",
    "vit_teacher",
    "wrap_bert",
    "wrap_dinov2",
]
