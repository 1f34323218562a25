"""The ``act3d`` command line.

Each command group lives in its own module that exposes ``register(subparsers)``; the
module registers one or more sub-commands whose handler is stored as ``func`` in the
parsed namespace and returns an exit code.  Importing is lazy where it matters: heavy
imports (torch, transformers) happen inside the handlers, so ``act3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from act3d import __version__

__all__ = ["build_parser", "main", "COMMAND_MODULES"]

# One line per command module; each must define ``register(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "act3d.data.cli",
    "act3d.models.teachers.cli",
    "act3d.train.stage1",
    "act3d.train.stage2",
    "act3d.train.finetune",
    "act3d.train.segment",
    "act3d.eval.cli",
    "act3d.convert",
    "act3d.demo",
)


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="act3d",
        description="ACT for point clouds: cross-modal teachers (Stage I), masked point "
        "modelling students (Stage II), fine-tuning and evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"act3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
