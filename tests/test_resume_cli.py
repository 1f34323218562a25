"""Resume after SIGKILL through the real command line, on the `tiny` Stage I preset.

``act3d pretrain-teacher --config tiny`` (the shipped MiniLM teacher, synthetic shapes) is
killed with SIGKILL from outside as soon as its first epoch's checkpoint is on disk, at
whatever point of the second epoch it has reached, then continued with ``--resume``. The
loss curve (every logged step and validation), the best epoch and the final weights must be
exactly those of the same command run without interruption. The engine-level version of
this test, with a kill at a chosen step, is in ``test_engine.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from act3d.checkpoint import CheckpointError, load_state, load_weights

# The tiny preset with a smaller data set: 4 epochs of 6 steps, a log line per step.
OVERRIDES = (
    "data.num_samples=48", "data.val_samples=16", "optim.batch_size=8", "optim.epochs=4",
    "run.log_every=1", "run.tensorboard=false",
)  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return env


def _command(out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "act3d", "pretrain-teacher", "--config", "tiny", "--out", str(out)]
    for item in OVERRIDES:
        cmd += ["--set", item]
    return cmd


def _run_dir(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def _checkpoint_epoch(out: Path) -> int:
    """Epoch of the newest complete ``last.pt`` under ``out`` (0: none yet)."""
    for path in out.glob("*/checkpoints/last.pt"):
        try:
            return int(load_state(path)["epoch"])
        except (CheckpointError, FileNotFoundError):  # replaced between glob and read
            return 0
    return 0


@pytest.fixture(scope="module")
def minilm() -> None:
    from act3d.models.teachers.registry import available_teachers

    ok, why = next((ok, why) for name, ok, why in available_teachers() if name == "minilm")
    if not ok:
        pytest.skip(f"MiniLM teacher not installed: {why}")


def test_stage1_tiny_resume_after_sigkill_matches_uninterrupted(tmp_path: Path, minilm: None) -> None:
    env = _env()
    ref_out = tmp_path / "uninterrupted"
    done = subprocess.run(_command(ref_out), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ref = _run_dir(ref_out)

    killed_out = tmp_path / "killed"
    proc = subprocess.Popen(_command(killed_out), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while _checkpoint_epoch(killed_out) < 1:
            assert proc.poll() is None, f"finished before the first checkpoint was seen: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    run = _run_dir(killed_out)
    killed_at = load_state(run / "checkpoints" / "last.pt")["epoch"]
    assert 1 <= killed_at < 4, killed_at
    assert not (run / "teacher.safetensors").exists()  # it really stopped mid-run

    resumed = subprocess.run([sys.executable, "-m", "act3d", "pretrain-teacher", "--resume", str(run)],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    records = _records(ref)
    splits = [r["split"] for r in records]
    assert (splits.count("train_step"), splits.count("train")) == (4 * 6, 4)  # a record per step, per epoch
    assert _records(run) == records
    for name in ("teacher.safetensors", "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        a, b = load_weights(ref / name), load_weights(run / name)
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (run / "plots" / "reconstruction.png").is_file()
