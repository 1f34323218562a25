"""Stage II (`act3d pretrain`): frozen teacher, targets, masking, learning, export, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from act3d.cli import main
from act3d.config import load_config
from act3d.models.autoencoder import ACTAutoencoder, AutoencoderConfig
from act3d.models.classifier import PointClassifier
from act3d.models.encoder_api import load_encoder
from act3d.models.mpm import MaskedPointModel
from act3d.models.teachers.base import BlockStackTeacher
from act3d.ops import chamfer_distance
from act3d.train.stage1 import Stage1Config, save_autoencoder
from act3d.train.stage2 import TARGETS, Stage2Config, Stage2ModelConfig, Stage2Task, pretrain

G, K, N = 16, 16, 256
TEACHER_TARGETS = ("reference", "clean", "transformer")


pytestmark = pytest.mark.usefixtures("one_thread")


def _teacher(seed: int = 0) -> ACTAutoencoder:
    torch.manual_seed(seed)
    cfg = AutoencoderConfig(
        num_groups=G, group_size=K, token_dim=32, num_codes=64, dgcnn_widths=(16, 16, 16, 32),
        num_prompts=4, pos_hidden=16, decoder_hidden=32, fold_hidden=32,
    )  # fmt: skip
    model = ACTAutoencoder(cfg, BlockStackTeacher(32, 2, 2))
    with torch.no_grad():  # non-trivial BatchNorm statistics: a train-mode update would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _config(target: str, **run) -> Stage2Config:
    overrides = [
        f"target={target}", "model.encoder=tiny", f"model.num_groups={G}", f"model.group_size={K}",
        f"data.num_points={N}", "data.num_samples=8", "data.val_samples=4", "optim.batch_size=4",
        "optim.warmup_epochs=0", "optim.epochs=1", "runtime.device=cpu", "runtime.threads=1",
        "run.progress=off", "run.tensorboard=false", "run.log_every=1",
    ]  # fmt: skip
    return load_config(Stage2Config, None, overrides + [f"{k}={v}" for k, v in run.items()])


def _clouds(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(batch, N, 3, generator=g)
    return pts / pts.norm(dim=-1).amax(dim=-1)[:, None, None]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("target", TEACHER_TARGETS)
def test_teacher_frozen_bit_identical(target: str) -> None:
    teacher = _teacher()
    before = _snapshot(teacher)
    task = Stage2Task(_config(target), teacher)
    torch.manual_seed(1)
    model = task.build_model()
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert set(model.state_dict()) == set(MaskedPointModel(task.mpm_config).state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):
        loss, _ = task.training_step(model, {"points": _clouds(seed=step)}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert set(after) == set(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"teacher changed: {changed}"
    assert any(k.endswith("num_batches_tracked") for k in before)  # buffers were compared


def test_targets_follow_the_variant() -> None:
    teacher = _teacher()
    patches, centers = Stage2Task(_config("clean"), teacher).group(_clouds())
    tasks = {t: Stage2Task(_config(t), teacher) for t in TEACHER_TARGETS}
    out = {}
    for name, task in tasks.items():
        torch.manual_seed(0)
        first = task.targets(patches, centers)
        torch.manual_seed(1)
        out[name] = (first, task.targets(patches, centers))
        assert first.shape == (4, G, 32) and not first.requires_grad
    teacher.eval()
    expected = teacher.latent_features(patches, centers, code="argmax", output="dgcnn")
    assert torch.equal(out["clean"][0], expected) and torch.equal(out["clean"][1], expected)
    expected = teacher.latent_features(patches, centers, code="argmax", output="transformer")
    assert torch.equal(out["transformer"][0], expected)
    assert not torch.equal(out["reference"][0], out["reference"][1])  # sampled code, dropout
    assert not torch.allclose(out["reference"][0], out["clean"][0])
    assert Stage2Task(_config("points"), teacher).targets(patches, centers) is None


def test_mask_counts_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    task = Stage2Task(_config("clean", **{"model.mask_ratio": 0.8}), _teacher())
    model = task.build_model()
    seen = []
    decode = model.forward_decoder

    def spy(visible, centers, mask):
        seen.append((visible.shape, mask.clone()))
        return decode(visible, centers, mask)

    monkeypatch.setattr(model, "forward_decoder", spy)
    for step in range(3):
        task.training_step(model, {"points": _clouds(seed=step)}, step)
    masked = int(0.8 * G)
    for shape, mask in seen:
        assert mask.shape == (4, G)
        assert mask.sum(dim=1).tolist() == [masked] * 4
        assert shape[:2] == (4, G - masked)
    assert not torch.equal(seen[0][1], seen[1][1])


def test_grouping_and_teacher_errors() -> None:
    with pytest.raises(ValueError, match="model.num_groups=16"):
        Stage2Task(_config("clean", **{"model.num_groups": 32}), _teacher())
    with pytest.raises(ValueError, match="needs a Stage I teacher"):
        Stage2Task(_config("reference"))
    with pytest.raises(ValueError, match="reference, clean, transformer, points"):
        Stage2Config(target="bogus")
    with pytest.raises(ValueError, match="'reference', 'clean', 'transformer', 'points'"):
        _config("bogus")


@pytest.mark.parametrize("target, steps", [("clean", 25), ("points", 40)])
def test_short_run_lowers_loss(target: str, steps: int) -> None:
    """Fixed clouds, a fixed mask: the trained student's loss falls and beats constants."""
    task = Stage2Task(_config(target, **{"model.drop_path": 0.0, "model.decoder_drop_path": 0.0}), _teacher())
    torch.manual_seed(0)
    model = task.build_model()
    points = _clouds(4, seed=5)
    patches, centers = task.group(points)
    target_feats = task.targets(patches, centers)
    mask = model.random_mask(4, generator=torch.Generator().manual_seed(3))

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(model(patches, centers, target_feats, mask=mask))
        model.train()
        return value

    start = held_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = model(patches, centers, target_feats)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = held_loss()
    if target == "points":
        # the best constant patch shape: the mean patch or any one of the masked patches
        masked = patches[mask]  # (M, k, 3)
        candidates = torch.cat([masked.mean(dim=0, keepdim=True), masked])
        constant = min(
            float(chamfer_distance(c.expand_as(masked).contiguous(), masked, norm=2)) for c in candidates
        )
        assert end < 0.1 * start and end < 0.7 * constant, (start, end, constant)
    else:
        # the best constant direction for mean cosine: the mean of the unit targets
        masked = target_feats[mask]  # (M, C)
        best = F.normalize(masked, dim=-1).mean(dim=0, keepdim=True)
        constant = -float(F.cosine_similarity(masked, best, dim=-1).mean())
        assert end < start - 0.5 and end < constant, (start, end, constant)


def test_fit_exports_student_only(tmp_path) -> None:
    cfg = _config("clean", **{"run.out_dir": str(tmp_path)})
    result = pretrain(cfg, _teacher())
    run = result.run_dir
    assert "val/loss" in result.last and "train/loss" in result.last
    weights = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert set(weights) == set(MaskedPointModel(Stage2Task(cfg, _teacher()).mpm_config).state_dict())
    assert (run / "plots" / "masking.png").stat().st_size > 1000
    encoder = load_encoder(run / "student.safetensors")
    state = load_file(str(run / "student.safetensors"))
    clf = PointClassifier(encoder.config, num_classes=5)
    report = clf.load_backbone(state)
    assert set(report.loaded) == set(clf.backbone.state_dict()) and not report.missing
    for key, value in weights.items():
        if key.startswith("student."):
            assert torch.equal(state[key.removeprefix("student.")], value)


@pytest.mark.parametrize("target", ["reference", "points"])
def test_cli_end_to_end(target: str, tmp_path, capsys) -> None:
    teacher_file = save_autoencoder(_teacher(), tmp_path / "teacher.safetensors", "tiny-blocks")
    teacher_args = ["--teacher", str(teacher_file)] if target != "points" else []
    args = [
        "pretrain", "--target", target, "--data", "synthetic", "--out", str(tmp_path), *teacher_args,
        "--set", "model.encoder=tiny",
        "--set", f"model.num_groups={G}", "--set", f"model.group_size={K}",
        "--set", f"data.num_points={N}", "--set", "data.num_samples=8", "--set", "data.val_samples=4",
        "--set", "optim.batch_size=4", "--set", "optim.warmup_epochs=0", "--set", "optim.epochs=1",
        "--set", "runtime.device=cpu", "--set", "runtime.threads=1", "--set", "run.progress=off",
        "--set", "run.tensorboard=false",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    student = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("student: "))
    run_dir = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("run: "))
    assert load_encoder(student).config.embed_dim == 128
    assert run_dir.startswith(str(tmp_path))
    saved = load_config(Stage2Config, f"{run_dir}/config.yaml")
    assert saved.target == target and saved.teacher == (str(teacher_file) if teacher_args else None)
    records = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    assert any(r["split"] == "val" and "loss" in r["values"] for r in records)


def test_cli_target_choices(capsys) -> None:
    assert main(["pretrain", "--target", "bogus"]) == 2
    err = capsys.readouterr().err
    for name in TARGETS:
        assert name in err
    assert main(["pretrain", "--target", "clean"]) == 2
    assert "needs a Stage I teacher" in capsys.readouterr().err


def test_presets_load_and_pair_with_stage1() -> None:
    for name in ("tiny", "small", "paper"):
        cfg = load_config(Stage2Config, name, stage="pretrain")
        teacher = load_config(Stage1Config, name, stage="pretrain-teacher")
        assert cfg.data.num_points == teacher.data.num_points
        assert (cfg.model.num_groups, cfg.model.group_size) == (teacher.model.num_groups, teacher.model.group_size)
        assert cfg.model.mpm_config("points").encoder.num_groups == cfg.model.num_groups
    paper = load_config(Stage2Config, "paper", stage="pretrain")
    assert (paper.model.encoder, paper.model.mask_ratio, paper.optim.batch_size) == ("paper", 0.8, 128)
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.epochs) == (1e-3, 0.05, 300)
    assert isinstance(Stage2ModelConfig().encoder_config().embed_dim, int)
