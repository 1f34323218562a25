"""The training engine: run folder, schedule, progress, resume after SIGKILL, DDP equality."""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from act3d.checkpoint import load_state, load_weights, read_weights_metadata
from act3d.config import OptimConfig, load_config, to_dict
from act3d.train.distributed import per_rank_batch_size
from act3d.train.engine import FitResult, fit, resolve_device, resolve_precision, unwrap_model
from act3d.train.optim import WarmupCosine, build_optimizer, lr_at, param_groups
from act3d.train.progress import EpochProgress, format_duration, resolve_progress_mode

sys.path.insert(0, str(Path(__file__).parent))
from _toy_train import ToyConfig, ToyNet, ToyTask  # noqa: E402

TOY_SCRIPT = Path(__file__).parent / "_toy_train.py"


def _cfg(*overrides: str) -> ToyConfig:
    return load_config(ToyConfig, None, list(overrides))


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ToyTask, FitResult]:
    """The toy task trained for 4 epochs, uninterrupted, in an auto-named run folder."""
    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg("run.save_every=1", "run.keep_last=2", f"run.out_dir={out}")
    task = ToyTask(cfg)
    return task, fit(task, cfg, stage="toy")


def test_run_folder_has_all_files(reference_run: tuple[ToyTask, FitResult]) -> None:
    task, result = reference_run
    run_dir = result.run_dir
    assert re.fullmatch(r"toy-toy-\d{8}-\d{6}", run_dir.name)
    assert {p.name for p in run_dir.iterdir()} == {
        "config.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "plots", "README.md"
    }
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == to_dict(task.cfg)
    assert any(p.name.startswith("events.out.tfevents") and p.stat().st_size > 0 for p in (run_dir / "tensorboard").iterdir())
    ckpts = run_dir / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {
        "last.pt", "last.safetensors", "best.safetensors", "epoch-0003.safetensors", "epoch-0004.safetensors"
    }
    for name in ("loss.png", "acc.png", "lr.png"):
        assert (run_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert task.steps_seen == list(range(16)) and task.fit_end_called


def test_metrics_records_and_result(reference_run: tuple[ToyTask, FitResult]) -> None:
    task, result = reference_run
    records = _records(result.run_dir)
    steps = [r for r in records if r["split"] == "train_step"]
    epochs = [r for r in records if r["split"] == "train"]
    vals = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in steps] == list(range(1, 17))
    assert [r["epoch"] for r in steps] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert [(r["step"], r["epoch"]) for r in vals] == [(4, 1), (8, 2), (12, 3), (16, 4)]
    assert set(vals[0]["values"]) == {"loss", "acc"} and set(epochs[0]["values"]) == {"loss", "acc"}
    # 33 validation samples: accuracy is a multiple of 1/33, not an average of batch means.
    assert all(abs(v["values"]["acc"] * 33 - round(v["values"]["acc"] * 33)) < 1e-9 for v in vals)
    # epoch means are the means of the step records
    for e, rec in enumerate(epochs, start=1):
        mean = sum(r["values"]["loss"] for r in steps if r["epoch"] == e) / 4
        assert rec["values"]["loss"] == pytest.approx(mean, rel=1e-12)
    # schedule: warm-up from 1e-6 over one epoch (4 steps) to 1e-2, then cosine down
    lrs = [r["values"]["lr"] for r in steps]
    assert lrs[0] == pytest.approx(1e-6) and lrs[4] == pytest.approx(1e-2)
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5])) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    # best epoch = first maximum of val/acc
    accs = [v["values"]["acc"] for v in vals]
    best_epoch = accs.index(max(accs)) + 1
    assert result.best_epoch == best_epoch and result.best_metric == "val/acc"
    assert result.best["val/acc"] == max(accs) and result.best["train/loss"] == epochs[best_epoch - 1]["values"]["loss"]
    assert result.last == {
        **{f"train/{k}": v for k, v in epochs[-1]["values"].items()},
        **{f"val/{k}": v for k, v in vals[-1]["values"].items()},
    }
    assert (result.epochs, result.steps) == (4, 16)
    ckpts = result.run_dir / "checkpoints"
    assert read_weights_metadata(ckpts / "best.safetensors")["epoch"] == str(best_epoch)
    meta = read_weights_metadata(ckpts / "last.safetensors")
    assert meta["epoch"] == "4" and json.loads(meta["config"]) == to_dict(task.cfg)
    last = load_weights(result.last_weights)
    assert all(torch.equal(last[k], v) for k, v in load_weights(ckpts / "epoch-0004.safetensors").items())
    ToyNet(task.cfg.model).load_state_dict(last)
    readme = (result.run_dir / "README.md").read_text()
    assert "val/acc" in readme and f"best (epoch {best_epoch})" in readme and "--resume" in readme


def test_resume_after_sigkill_matches_uninterrupted(
    reference_run: tuple[ToyTask, FitResult], tmp_path: Path
) -> None:
    _, ref = reference_run
    killed = tmp_path / "killed"
    # Step 10 is in epoch 3, after epoch 2's checkpoint; steps 9-10 were already logged.
    proc = subprocess.run(
        [sys.executable, str(TOY_SCRIPT), "--run-dir", str(killed), "--kill-at-step", "10",
         "--set", "run.save_every=1", "--set", "run.keep_last=2"],
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_state(killed / "checkpoints" / "last.pt")["epoch"] == 2
    assert len(_records(killed)) == 2 * (4 + 2) + 2  # two logged steps past the checkpoint

    cfg = _cfg("run.save_every=1", "run.keep_last=2")
    changed = _cfg("run.save_every=1", "run.keep_last=2", "optim.lr=0.5")
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.01 -> 0\.5"):
        fit(ToyTask(changed), changed, stage="toy", resume=killed)

    task = ToyTask(cfg)
    result = fit(task, cfg, stage="toy", resume=killed)
    assert task.steps_seen == list(range(8, 16))
    assert _records(killed) == _records(ref.run_dir)
    assert (result.last, result.best, result.best_epoch) == (ref.last, ref.best, ref.best_epoch)
    a, b = load_weights(result.last_weights), load_weights(ref.last_weights)
    assert all(torch.equal(a[k], b[k]) for k in a)

    again = ToyTask(cfg)  # resuming a finished run trains nothing and reports the same
    assert fit(again, cfg, stage="toy", resume=killed).last == ref.last and again.steps_seen == []


def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    overrides = ["model.dropout=0", "model.augment=false", "optim.grad_clip=1.0", "optim.epochs=3",
                 "run.tensorboard=false", "run.plots=false"]
    ddp_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(TOY_SCRIPT), "--run-dir", str(ddp_dir), "--set", "optim.grad_accum=2"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.count("epoch 3/3") == 1  # progress from rank 0 only
    cfg = _cfg(*overrides)
    single = fit(ToyTask(cfg), cfg, stage="toy", run_dir=tmp_path / "single")
    a, b = load_weights(single.last_weights), load_weights(ddp_dir / "checkpoints" / "last.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["fc1.weight"], ToyNet(cfg.model).fc1.weight.detach())  # it trained
    ra, rb = _records(single.run_dir), _records(ddp_dir)
    assert [(r["step"], r["split"]) for r in ra] == [(r["step"], r["split"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x["values"].keys() == y["values"].keys()
        for k in x["values"]:  # includes validation over 33 samples split 17/16 across ranks
            assert y["values"][k] == pytest.approx(x["values"][k], rel=1e-5, abs=1e-6), (x, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]


# ----------------------------------------------------------------------------- errors


def test_fit_errors(tmp_path: Path, reference_run: tuple[ToyTask, FitResult]) -> None:
    with pytest.raises(ValueError, match=r"batch_size=16 is not divisible .*grad_accum \(3\)"):
        cfg = _cfg("optim.grad_accum=3")
        fit(ToyTask(cfg), cfg, run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        cfg = _cfg("model.train_size=8")
        fit(ToyTask(cfg), cfg, run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match=r"run\.best_metric='val/nope' is not among .*val/acc"):
        cfg = _cfg("run.best_metric=val/nope", "optim.epochs=1", "optim.warmup_epochs=0")
        fit(ToyTask(cfg), cfg, run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="already holds a run"):
        cfg = _cfg()
        fit(ToyTask(cfg), cfg, run_dir=reference_run[1].run_dir)
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.pt"):
        cfg = _cfg()
        fit(ToyTask(cfg), cfg, resume=tmp_path / "b")

    class NoVal(ToyTask):
        def val_dataset(self) -> None:
            return None

    with pytest.raises(ValueError, match="has no validation set"):
        cfg = _cfg()
        fit(NoVal(cfg), cfg, run_dir=tmp_path / "d")

    class BadLoss(ToyTask):
        def training_step(self, model, batch, step):  # noqa: ANN001, ANN202
            return model(batch["x"]), {}

    with pytest.raises(ValueError, match="scalar loss"):
        cfg = _cfg()
        fit(BadLoss(cfg), cfg, run_dir=tmp_path / "e")
    with pytest.raises(ValueError, match="fit needs cfg.optim"):
        fit(ToyTask(_cfg()), object(), run_dir=tmp_path / "f")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        cfg = _cfg("runtime.precision=fp16")
        fit(ToyTask(cfg), cfg, run_dir=tmp_path / "g")


def test_bf16_autocast_on_cpu_and_train_best_metric(tmp_path: Path) -> None:
    class NoVal(ToyTask):
        def val_dataset(self) -> None:
            return None

    cfg = _cfg("runtime.precision=bf16", "optim.epochs=2", "run.best_metric=train/loss", "run.best_mode=min",
               "run.tensorboard=false", "run.plots=false", "run.progress=off")
    result = fit(NoVal(cfg), cfg, run_dir=tmp_path / "bf16")
    assert math.isfinite(result.last["train/loss"]) and result.best_epoch in (1, 2)
    assert not (tmp_path / "bf16" / "tensorboard").exists() and not (tmp_path / "bf16" / "plots").exists()
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="valid choices"):
        resolve_device("tpu")


# ----------------------------------------------------------------------------- optim


def test_lr_at_schedule() -> None:
    kw = dict(total_steps=100, warmup_steps=10, base_lr=1.0, start_lr=0.01, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.01)
    assert lr_at(5, **kw) == pytest.approx(0.505)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw) == pytest.approx(0.55)  # cosine midpoint
    assert lr_at(100, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    assert lr_at(0, 10, 0, 1.0, 0.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, 10, 20, 1.0, 0.0, 0.0)


def test_warmup_cosine_scales_groups_and_round_trips() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias], "lr_scale": 0.5}])
    cfg = OptimConfig(lr=1.0, epochs=10, warmup_epochs=1, warmup_start_lr=0.0, min_lr=0.0)
    sched = WarmupCosine.from_config(opt, cfg, steps_per_epoch=4)
    assert opt.param_groups[0]["lr"] == 0.0
    for _ in range(4):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0) and opt.param_groups[1]["lr"] == pytest.approx(0.5)
    other = WarmupCosine.from_config(opt, cfg, steps_per_epoch=4)
    other.load_state_dict(sched.state_dict())
    assert other.last_step == 4 and opt.param_groups[0]["lr"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differs from the config"):
        WarmupCosine.from_config(opt, cfg, steps_per_epoch=5).load_state_dict(sched.state_dict())


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, 4))
        self.prompt_embed = nn.Parameter(torch.zeros(3, 4))
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_param_groups_rule() -> None:
    model = _Tokens()
    groups = param_groups(model, 0.05, no_decay_names=["cls_pos"])
    assert groups[0]["weight_decay"] == 0.05 and groups[0]["names"] == ["proj.weight"]
    assert groups[1]["weight_decay"] == 0.0
    assert groups[1]["names"] == ["cls_token", "cls_pos", "prompt_embed", "proj.bias", "norm.weight", "norm.bias"]
    assert "cls_pos" in param_groups(model, 0.05)[0]["names"]  # decayed unless listed
    opt = build_optimizer(groups, OptimConfig(lr=1e-3, weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and sum(len(g["params"]) for g in opt.param_groups) == 7
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(param_groups(model, 0.05), OptimConfig())


def test_per_rank_batch_size() -> None:
    assert per_rank_batch_size(64, 2, 2) == 16 and per_rank_batch_size(64, 1, 1) == 64
    with pytest.raises(ValueError, match=r"batch_size=64 is not divisible by world_size \(3\)"):
        per_rank_batch_size(64, 3, 1)


def test_unwrap_model() -> None:
    net = nn.Linear(2, 2)
    assert unwrap_model(net) is net


# ----------------------------------------------------------------------------- progress


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_modes() -> None:
    assert resolve_progress_mode("auto", io.StringIO(), is_main=True) == "log"
    assert resolve_progress_mode("auto", _TTY(), is_main=True) == "bar"
    assert resolve_progress_mode("bar", _TTY(), is_main=False) == "off"
    with pytest.raises(ValueError, match="valid choices: auto, bar, log, off"):
        resolve_progress_mode("fancy", io.StringIO(), True)
    tty = _TTY()
    bar = EpochProgress(2, 5, steps=3, mode="bar", stream=tty)
    for _ in range(3):
        bar.update(16, loss=0.5)
    bar.close({"val/acc": 0.9})
    out = tty.getvalue()
    assert "epoch 2/5" in out and "loss=0.5" in out and "samples/s" in out and "\r" in out
    log = io.StringIO()
    line = EpochProgress(1, 5, steps=3, mode="log", stream=log, eta_epochs_left=4)
    for _ in range(3):
        line.update(16)
    line.close({"train/loss": 1.25})
    text = log.getvalue()
    assert text.count("\n") == 1 and "\r" not in text
    assert text.startswith("epoch 1/5  train/loss 1.25  ") and "samples/s" in text and "eta " in text
    silent = io.StringIO()
    off = EpochProgress(1, 5, steps=1, mode="off", stream=silent)
    off.update(1)
    off.close({"a": 1.0})
    assert silent.getvalue() == ""
    assert format_duration(75.2) == "1m15s" and format_duration(3725) == "1h02m"


def test_log_mode_prints_one_line_per_epoch(reference_run: tuple[ToyTask, FitResult], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg("optim.epochs=2", "run.tensorboard=false", "run.plots=false")
    fit(ToyTask(cfg), cfg, run_dir=tmp_path / "r")
    err = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in err if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert len(err) == 3 and err[0].startswith("run folder:")
