"""Stage I (`act3d pretrain-teacher`): learning, frozen backbone, schedules, export, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from act3d.checkpoint import load_weights, read_weights_metadata, save_weights
from act3d.cli import main
from act3d.config import load_config
from act3d.models.autoencoder import ACTAutoencoder, kl_weight_schedule, tau_schedule
from act3d.models.teachers.base import BlockStackTeacher
from act3d.train.stage1 import (
    Stage1Config,
    Stage1Schedule,
    Stage1Task,
    load_autoencoder,
    pretrain_teacher,
    reconstruct,
    save_autoencoder,
)

G, K, N = 16, 8, 128
SMALL_MODEL = [
    f"data.num_points={N}", f"model.num_groups={G}", f"model.group_size={K}", "model.token_dim=32",
    "model.num_codes=32", "model.dgcnn_widths=[16,16,32,32]", "model.num_prompts=4",
    "model.pos_hidden=16", "model.decoder_hidden=64", "model.fold_hidden=32",
]  # fmt: skip
QUIET = ["runtime.device=cpu", "runtime.threads=1", "run.progress=off", "run.tensorboard=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _teacher() -> BlockStackTeacher:
    return BlockStackTeacher(32, 2, 2, name="tiny-test")


def _config(*extra: str) -> Stage1Config:
    return load_config(Stage1Config, None, SMALL_MODEL + QUIET + list(extra))


def _clouds(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(batch, N, 3, generator=g)
    return pts / pts.norm(dim=-1).amax(dim=-1)[:, None, None]


def _val_cd(task: Stage1Task, model: ACTAutoencoder) -> float:
    """Mean whole-cloud CD-L1 over the task's validation set, in the engine's batches."""
    model.eval()
    data = task.val_dataset()
    size = task.cfg.optim.batch_size
    total, count = 0.0, 0
    for start in range(0, len(data), size):
        points = torch.stack([data[i]["points"] for i in range(start, min(start + size, len(data)))])
        with torch.no_grad():
            sums = task.validation_step(model, {"points": points})
        total, count = total + float(sums["cd_l1"]), count + sums["count"]
    return total / count


def test_short_run_learns_freezes_backbone_and_exports(tmp_path) -> None:
    cfg = _config(
        "data.num_samples=64", "data.val_samples=16", "optim.batch_size=8", "optim.warmup_epochs=1",
        "optim.epochs=7", "optim.lr=5e-3", "schedule.tau_iters=null", "schedule.kl_zero_iters=10",
        "schedule.kl_ramp_iters=null", "plot_samples=2", f"run.out_dir={tmp_path}", "run.log_every=8",
    )  # fmt: skip
    task = Stage1Task(cfg, _teacher)
    torch.manual_seed(cfg.runtime.seed)  # the engine seeds the same way before build_model
    initial = task.build_model()
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    untrained = _val_cd(task, initial)

    result = pretrain_teacher(cfg, _teacher)
    run = result.run_dir
    best = result.best["val/cd_l1"]
    assert best < 0.7 * untrained, (untrained, best)
    assert result.best_epoch is not None and result.steps == 56

    # the schedule followed the global iteration: tau fell from ~1 to ~tau_end
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    taus = [r["values"]["tau"] for r in records if r["split"] == "train"]
    assert taus == sorted(taus, reverse=True) and taus[0] > 0.9 and taus[-1] < 0.15
    betas = [r["values"]["kl_weight"] for r in records if r["split"] == "train"]
    assert betas[0] < betas[-1] <= 0.1

    # teacher.safetensors = the best epoch's weights, frozen backbone bit-identical
    exported = load_weights(run / "teacher.safetensors")
    assert exported.keys() == load_weights(run / "checkpoints" / "best.safetensors").keys()
    for key, value in load_weights(run / "checkpoints" / "best.safetensors").items():
        assert torch.equal(exported[key], value), key
    teacher_keys = [k for k in before if k.startswith("teacher.")]
    assert teacher_keys and all(torch.equal(exported[k], before[k]) for k in teacher_keys)
    for prefix in ("prompts.", "encoder.", "dgcnn_1.", "codebook.", "decoder."):
        keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
        assert any(not torch.equal(exported[k], before[k]) for k in keys), prefix
    meta = read_weights_metadata(run / "teacher.safetensors")
    assert meta["epoch"] == str(result.best_epoch)
    assert json.loads(meta["teacher_arch"])["kind"] == "blocks"

    # the file alone rebuilds the model: same outputs as the weights in a fresh model
    loaded = load_autoencoder(run)
    reference = ACTAutoencoder(cfg.model, _teacher())
    reference.load_state_dict(exported)
    reference.eval()
    points = _clouds()
    with torch.no_grad():
        a, b = reconstruct(loaded, points), reconstruct(reference, points)
    assert torch.equal(a.fine, b.fine) and torch.equal(a.coarse, b.coarse)
    assert not loaded.training and not any(p.requires_grad for p in loaded.teacher.parameters())
    assert _val_cd(task, loaded) == pytest.approx(best, rel=1e-6)

    assert (run / "plots" / "reconstruction.png").stat().st_size > 10_000


def test_trains_and_validates_under_bf16_autocast(tmp_path) -> None:
    # runtime.precision=bf16 (what "auto" means on a GPU): the decoder's output is bf16,
    # the Chamfer distances must still be taken against the fp32 patches.
    cfg = _config(
        "runtime.precision=bf16", "data.num_samples=16", "data.val_samples=8", "optim.batch_size=8",
        "optim.warmup_epochs=0", "optim.epochs=1", "plot_samples=2", f"run.out_dir={tmp_path}",
    )  # fmt: skip
    result = pretrain_teacher(cfg, _teacher)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.last["val/cd_l1"]))
    model = load_autoencoder(result.run_dir)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        rec = reconstruct(model, _clouds())
    assert rec.fine.dtype == rec.coarse.dtype == torch.float32


def test_frozen_backbone_gets_no_gradient() -> None:
    task = Stage1Task(_config(), _teacher)
    torch.manual_seed(0)
    model = task.build_model()
    task.on_step_start(model, 0, 10)
    loss, logs = task.training_step(model, {"points": _clouds()}, 0)
    loss.backward()
    assert set(logs) == {"cd_coarse", "cd_fine", "kl", "tau", "kl_weight"}
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert model.prompts.tokens.grad is not None and model.prompts.tokens.grad.abs().sum() > 0
    assert model.encoder.first_conv[0].weight.grad.abs().sum() > 0  # gradient flows through the teacher
    assert not model.teacher.training

    full = Stage1Task(_config("model.prompt_mode=full"), _teacher)
    model = full.build_model()
    full.training_step(model, {"points": _clouds()}, 0)[0].backward()
    assert model.prompts is None
    assert all(p.grad is not None for p in model.teacher.parameters())


def test_schedule_follows_the_iteration() -> None:
    paper = Stage1Schedule()
    task = Stage1Task(_config(), _teacher)
    for step in (0, 5_000, 10_000, 60_000, 110_000, 150_000):
        task.on_step_start(torch.nn.Identity(), step, 200_000)
        assert task.tau == tau_schedule(step, 100_000, 1.0, 0.0625)
        assert task.kl_weight == kl_weight_schedule(step, 10_000, 100_000, 0.1)
    assert paper.kl_weight(9_999, 1) == 0.0 and paper.kl_weight(110_000, 1) == pytest.approx(0.1)
    whole = Stage1Schedule(tau_iters=None, kl_zero_iters=10, kl_ramp_iters=None)
    assert whole.tau(0, 100) == 1.0 and whole.tau(100, 100) == pytest.approx(0.0625)
    assert whole.kl_weight(10, 100) == 0.0 and whole.kl_weight(100, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="tau_iters"):
        Stage1Schedule(tau_iters=0)


def test_hf_teacher_round_trip_and_bad_files(tmp_path) -> None:
    from transformers import BertConfig

    from act3d.models.teachers.hf import hf_teacher_from_config

    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=16)
    torch.manual_seed(0)
    model = ACTAutoencoder(_config().model, hf_teacher_from_config(bert)).eval()
    path = save_autoencoder(model, tmp_path / "teacher.safetensors", "bert:somewhere")
    loaded = load_autoencoder(path)
    assert type(loaded.teacher) is type(model.teacher) and loaded.teacher.num_blocks == 2
    points = _clouds()
    with torch.no_grad():
        assert torch.equal(reconstruct(loaded, points).fine, reconstruct(model, points).fine)

    state = load_weights(path)
    meta = read_weights_metadata(path)
    dropped = dict(state)
    dropped.pop("teacher.layers.1.output.dense.weight")
    save_weights(dropped, tmp_path / "missing.safetensors", meta)
    with pytest.raises(ValueError, match="1 missing"):
        load_autoencoder(tmp_path / "missing.safetensors")
    save_weights(state, tmp_path / "plain.safetensors", {"format": "something-else"})
    with pytest.raises(ValueError, match="not a Stage I autoencoder"):
        load_autoencoder(tmp_path / "plain.safetensors")
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="teacher.safetensors"):
        load_autoencoder(empty)


def test_cli_end_to_end(tmp_path, capsys) -> None:
    base = ["pretrain-teacher", "--config", "tiny", "--teacher", "random:vit-ti", "--data", "synthetic",
            "--out", str(tmp_path)]  # fmt: skip
    sets = SMALL_MODEL + QUIET + [
        "data.num_samples=8", "data.val_samples=4", "optim.batch_size=4", "optim.warmup_epochs=0",
        "optim.epochs=1", "plot_samples=1",
    ]  # fmt: skip
    args = base + [a for s in sets for a in ("--set", s)]
    assert main(args) == 0
    out = capsys.readouterr().out
    run = next(tmp_path.glob("pretrain-teacher-tiny-*"))
    assert f"run: {run}" in out and "best val CD-L1:" in out
    assert f"teacher: {run / 'teacher.safetensors'}" in out
    model = load_autoencoder(run / "teacher.safetensors")
    assert model.teacher.num_blocks == 12 and model.teacher.embed_dim == 192
    assert read_weights_metadata(run / "teacher.safetensors")["teacher"] == "random:vit-ti"
    saved = load_config(Stage1Config, run / "config.yaml")
    assert saved.teacher == "random:vit-ti" and saved.model.num_groups == G and saved.run.out_dir == str(tmp_path)

    assert main(base + ["--set", "optim.lrr=1e-3"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(base + ["--set", "model.prompt_mode=prompts"]) == 2
    err = capsys.readouterr().err
    assert "prompt_mode" in err and "frozen" in err


def test_presets() -> None:
    for name in ("tiny", "small", "paper"):
        cfg = load_config(Stage1Config, name, stage="pretrain-teacher")
        Stage1Task(cfg)  # grouping fits the points
        assert cfg.run.best_metric == "val/cd_l1" and cfg.run.best_mode == "min"
    paper = load_config(Stage1Config, "paper", stage="pretrain-teacher")
    m, o, s = paper.model, paper.optim, paper.schedule
    assert paper.teacher == "vit-b" and paper.data.num_points == 1024
    assert (m.num_groups, m.group_size, m.token_dim, m.num_codes, m.num_prompts) == (64, 32, 384, 8192, 64)
    assert m.deep_prompts and m.prompt_mode == "prompt" and m.dgcnn_widths == (256, 512, 512, 1024)
    assert (o.lr, o.weight_decay, o.epochs, o.warmup_epochs, o.batch_size) == (5e-4, 5e-4, 300, 10, 64)
    assert (s.tau_start, s.tau_end, s.tau_iters) == (1.0, 0.0625, 100_000)
    assert (s.kl_max, s.kl_zero_iters, s.kl_ramp_iters) == (0.1, 10_000, 100_000)
    tiny = load_config(Stage1Config, "tiny", stage="pretrain-teacher")
    assert tiny.teacher == "minilm" and tiny.model.num_prompts < 64 and tiny.model.num_codes < 8192
