"""The ``act3d`` entry point: --version, --help, lazy command modules, error exit codes."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import act3d
from act3d.cli import COMMAND_MODULES, COMMANDS, build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "act3d", *args], capture_output=True, text=True, env=env, timeout=120)


def test_version_and_help_import_no_command_module() -> None:
    # In a fresh interpreter: the top-level help lists every command, but neither it nor
    # --version imports a command module or torch.
    code = (
        "import sys\n"
        "from act3d.cli import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('act3d.train', 'act3d.eval', 'act3d.models')))\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"act3d {act3d.__version__}" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_command_table_matches_what_the_modules_register() -> None:
    for module in COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        registered = {a.dest: a.help for a in sub._choices_actions}
        expected = {name: help_line for name, (mod, help_line) in COMMANDS.items() if mod == module}
        assert registered == expected, module


def test_a_command_loads_only_its_module() -> None:
    parser = build_parser(["act3d.eval.cli"])
    args = parser.parse_args(["probe", "ckpt.safetensors", "--data", "synthetic"])
    assert args.command == "probe" and callable(args.func)
    stub = parser.parse_args(["demo"])  # a stub: parses, but has no handler
    assert getattr(stub, "func", None) is None


def test_bad_command_and_bad_input_exit_2(tmp_path: Path) -> None:
    proc = _run("pretrian")
    assert proc.returncode == 2 and "invalid choice: 'pretrian'" in proc.stderr and "pretrain" in proc.stderr
    missing = tmp_path / "nowhere.h5"
    assert main(["data", "info", f"h5:{missing}"]) == 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("group", ["teachers", "segment", "partseg"])
def test_a_command_group_without_subcommand_prints_its_help(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group]) == 0
    assert f"usage: act3d {group}" in capsys.readouterr().out
