"""The ``act3d`` command line.

Each command group lives in its own module that exposes ``register(subparsers)``; the
module registers one or more sub-commands whose handler is stored as ``func`` in the
parsed namespace and returns an exit code.  Importing is lazy: :data:`COMMANDS` names each
command's module and help line, ``act3d --help`` imports none of them, and a command
imports only its own module (torch and transformers only when that command needs them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from act3d import __version__

__all__ = ["build_parser", "help_handler", "main", "COMMANDS", "COMMAND_MODULES"]

# Every command: the module that registers it (``register(subparsers) -> None``) and its
# one-line help. ``act3d --help`` lists them from here without importing any module (and
# so without torch); running a command imports only its own module.
# tests/test_cli.py checks that each module registers exactly these commands and helps.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("act3d.data.cli", "import, inspect and render point-cloud data"),
    "teachers": ("act3d.models.teachers.cli", "list Stage I teacher backbones; build the DINOv2 teacher"),
    "pretrain-teacher": ("act3d.train.stage1", "Stage I: train the cross-modal autoencoder (the teacher)"),
    "pretrain": ("act3d.train.stage2", "Stage II: masked point modelling with a frozen Stage I teacher"),
    "finetune": ("act3d.train.finetune",
                 "fine-tune a shape classifier (full, mlp3 or linear) from a student or scratch"),
    "segment": ("act3d.train.segment",
                "scene segmentation (S3DIS, synthetic rooms): train, and whole-room evaluation"),
    "partseg": ("act3d.train.partseg",
                "part segmentation (ShapeNetPart, synthetic parts): train, and instance/class mIoU"),
    "eval": ("act3d.eval.cli", "accuracy, mean class accuracy and confusion matrix of a fine-tuned classifier"),
    "probe": ("act3d.eval.cli", "linear SVM accuracy of frozen encoder features"),
    "fewshot": ("act3d.eval.cli", "few-shot classification: fine-tune per fold, mean ± std over folds"),
    "embed": ("act3d.eval.cli",
              "frozen encoder features of cloud/mesh files (or a data split), optional t-SNE plot"),
    "convert": ("act3d.convert", "import a reference ACT / Point-MAE .pth, or export act3d weights to one"),
    "demo": ("act3d.demo",
             "the whole pipeline on synthetic shapes (minutes on 2 CPU cores), ending with a report"),
}  # fmt: skip
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def help_handler(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of a command group run without its sub-command: print the group's help
    and exit 0."""

    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return show


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``act3d`` parser.

    Args:
        modules: the command modules to import and register in full (default: all of
            :data:`COMMAND_MODULES`); every command of the other modules is a stub with its
            help line only, so those modules are not imported.
    """
    load = COMMAND_MODULES if modules is None else tuple(modules)
    parser = argparse.ArgumentParser(
        prog="act3d",
        description="ACT for point clouds: cross-modal teachers (Stage I), masked point "
        "modelling students (Stage II), fine-tuning and evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"act3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_line) in COMMANDS.items():
        if module not in load:
            sub.add_parser(name, help=help_line, description=help_line)
    for module in load:
        importlib.import_module(module).register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (its first argument when that is not an option)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser([COMMANDS[command][0]] if command in COMMANDS else [])
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"act3d {args.command}: error: {msg}", file=sys.stderr)
        return 2
