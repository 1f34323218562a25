"""Classification fine-tuning: label subsets, init checkpoints, frozen modes, seeds summary, CLI.

Data: a tiny h5 fixture of three simple shape classes written into ``tmp_path`` (fast), and
the synthetic world for one end-to-end CLI run. Models: the ``tiny`` finetune preset.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import h5py
import numpy as np
import pytest
import torch

from act3d.checkpoint import load_weights, save_weights
from act3d.cli import main
from act3d.config import load_config
from act3d.models.encoder_api import save_encoder
from act3d.models.student import EncoderConfig, PointEncoder
from act3d.train.finetune import (
    FinetuneConfig,
    FinetuneTask,
    finetune,
    finetune_seeds,
    load_classifier,
    load_init_backbone,
    mean_std,
    resolve_augment,
    stratified_subset,
)

CLASSES = ("ball", "box", "rod")


def _cloud(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 3))
    if kind == 0:  # sphere
        pts = x / np.linalg.norm(x, axis=1, keepdims=True)
    elif kind == 1:  # cube surface
        pts = x / np.abs(x).max(axis=1, keepdims=True)
    else:  # thin rod along y
        pts = np.stack([0.05 * x[:, 0], rng.uniform(-1, 1, n), 0.05 * x[:, 2]], axis=1)
    return (pts * rng.uniform(0.8, 1.2)).astype(np.float32)


def write_shapes_h5(folder, per_class: dict[str, int], points: int = 200, seed: int = 0) -> str:
    """``shapes_{split}.h5`` files with ``data``/``label``/``class_names``; returns the SOURCE."""
    for split, count in per_class.items():
        rng = np.random.default_rng([seed, len(split)])
        labels = np.arange(count * len(CLASSES)) % len(CLASSES)
        data = np.stack([_cloud(int(k), points, rng) for k in labels])
        with h5py.File(folder / f"shapes_{split}.h5", "w") as f:
            f["data"] = data
            f["label"] = labels.astype(np.int64)
            f.attrs["class_names"] = json.dumps(list(CLASSES))
    return f"h5:{folder}/shapes_{{split}}.h5"


@pytest.fixture(scope="module")
def h5_source(tmp_path_factory) -> str:
    return write_shapes_h5(tmp_path_factory.mktemp("h5"), {"train": 10, "test": 4})


def tiny_cfg(source: str, out_dir, **changes) -> FinetuneConfig:
    overrides = [f"data.source={source}", f"run.out_dir={out_dir}", "data.num_samples=null", "data.val_samples=null"]
    overrides += [f"{k}={v}" for k, v in changes.items()]
    return load_config(FinetuneConfig, "tiny", overrides, stage="finetune")


# ----------------------------------------------------------------------------- pure pieces


def test_stratified_subset_is_stratified_seeded_and_sorted():
    labels = np.repeat(np.arange(4), [40, 20, 10, 3])
    idx = stratified_subset(labels, 0.1, seed=5)
    counts = np.bincount(labels[idx], minlength=4)
    assert counts.tolist() == [4, 2, 1, 1]  # round(0.1 * n), at least one per class
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, stratified_subset(labels, 0.1, seed=5))
    assert not np.array_equal(idx, stratified_subset(labels, 0.1, seed=6))
    assert np.array_equal(stratified_subset(labels, 1.0, seed=0), np.arange(labels.size))
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(labels, 0.0, seed=0)


def test_label_fraction_keeps_a_stratified_share_of_the_training_set(h5_source, tmp_path):
    cfg = tiny_cfg(h5_source, tmp_path, **{"data.label_fraction": 0.3})
    task = FinetuneTask(cfg)
    train = task.train_dataset()
    assert len(train) == 9  # 3 per class of 10
    assert np.bincount(train.labels).tolist() == [3, 3, 3]
    assert task.class_names == list(CLASSES)


def test_mean_std_uses_the_sample_std():
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(0.1)  # ddof=1; ddof=0 would give 0.0816
    assert mean_std([0.3]) == (0.3, None)


def test_resolve_augment_per_source():
    assert resolve_augment("auto", "scanobjectnn:PB_T50_RS") == "rotate"
    assert resolve_augment("auto", "synthetic-scan") == "rotate"
    assert resolve_augment("auto", "modelnet40") == "scale_translate"
    assert resolve_augment("auto", "synthetic") == "scale_translate"
    assert resolve_augment("none", "scanobjectnn:OBJ_BG") == "none"
    with pytest.raises(ValueError, match="valid choices"):
        resolve_augment("flip", "synthetic")


def test_unknown_mode_and_missing_checkpoint_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        load_config(FinetuneConfig, "tiny", ["model.mode=bitfit"], stage="finetune")
    with pytest.raises(FileNotFoundError):
        load_init_backbone(str(tmp_path / "nothing.safetensors"))
    save_weights({"w": torch.zeros(2)}, tmp_path / "other.safetensors", {"format": "act3d-weights-v1"})
    with pytest.raises(ValueError, match="not a backbone"):
        load_init_backbone(str(tmp_path / "other.safetensors"))


# ----------------------------------------------------------------------------- training


def _saved_encoder(path) -> tuple[PointEncoder, dict[str, torch.Tensor]]:
    torch.manual_seed(3)
    encoder = PointEncoder(EncoderConfig.tiny(num_groups=8, group_size=16))
    save_encoder(encoder, path)
    return encoder, {k: v.clone() for k, v in encoder.state_dict().items()}


def test_finetune_from_a_saved_encoder_loads_every_backbone_key(h5_source, tmp_path):
    encoder, state = _saved_encoder(tmp_path / "student.safetensors")
    # the run folder form of --init: a Stage II run folder holding student.safetensors
    cfg = tiny_cfg(h5_source, tmp_path, **{"model.init": str(tmp_path), "optim.epochs": 1, "optim.warmup_epochs": 0})
    record = finetune(cfg, run_dir=tmp_path / "run")
    assert record.backbone_keys_loaded == len(state)
    assert record.init.endswith("student.safetensors")
    model = load_classifier(tmp_path / "run")
    assert model.class_names == list(CLASSES)
    assert model.data_source == h5_source
    # full fine-tuning moved the backbone away from the initial weights
    changed = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, state[k])]
    assert changed
    with torch.no_grad():
        assert model(torch.randn(2, 128, 3)).shape == (2, 3)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert 0.0 <= result["last_acc"] <= 1.0 and result["selected_on_report_split"] is True


@pytest.mark.parametrize("mode", ["linear", "mlp3"])
def test_frozen_modes_leave_the_backbone_untouched(h5_source, tmp_path, mode):
    _, state = _saved_encoder(tmp_path / "student.safetensors")
    cfg = tiny_cfg(
        h5_source, tmp_path,
        **{"model.init": str(tmp_path / "student.safetensors"), "model.mode": mode, "optim.epochs": 1,
           "optim.warmup_epochs": 0, "holdout_fraction": 0.2},
    )  # fmt: skip
    record = finetune(cfg, run_dir=tmp_path / mode)
    weights = load_weights(tmp_path / mode / "classifier.safetensors")
    for key, value in state.items():  # parameters and batch-norm statistics alike
        assert torch.equal(weights[f"backbone.{key}"], value), key
    head_keys = [k for k in weights if k.startswith("cls_head_finetune.")]
    assert len(head_keys) == (2 if mode == "linear" else 16)  # 3 Linear + 2 BatchNorm (5 tensors each)
    # holdout selection: best epoch chosen on held-out training labels, both scored on test
    assert record.selected_on_report_split is False and "holdout" in record.selection
    assert record.train_size == 24  # 30 training shapes minus a stratified 20%


def test_seeds_summary_is_mean_and_sample_std_of_the_runs(h5_source, tmp_path):
    cfg = tiny_cfg(h5_source, tmp_path, **{"optim.epochs": 1, "optim.warmup_epochs": 0})
    summary = finetune_seeds(cfg, [0, 1, 2], group_dir=tmp_path / "group")
    saved = json.loads((tmp_path / "group" / "summary.json").read_text())
    for name in ("last_acc", "best_acc", "last_mean_class_acc", "best_mean_class_acc"):
        values = [json.loads((tmp_path / "group" / f"seed-{s}" / "result.json").read_text())[name] for s in (0, 1, 2)]
        assert saved["stats"][name]["values"] == values
        assert saved["stats"][name]["mean"] == pytest.approx(statistics.fmean(values))
        assert saved["stats"][name]["std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert [r.seed for r in summary.records] == [0, 1, 2]
    text = (tmp_path / "group" / "summary.md").read_text()
    assert "best epoch selected on the test split, as the reference does — optimistic" in text.lower()
    # resuming a finished group re-reads the results instead of training again
    again = finetune_seeds(cfg, [0, 1, 2], resume=tmp_path / "group")
    assert again.stats == summary.stats


def test_cli_finetune_on_synthetic_scratch_with_labels(tmp_path, capsys):
    code = main([
        "finetune", "--data", "synthetic", "--init", "scratch", "--mode", "linear", "--config", "tiny",
        "--labels", "0.5", "--set", f"run.out_dir={tmp_path}", "--set", "optim.epochs=1",
        "--set", "optim.warmup_epochs=0",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "overall accuracy" in out and "group:" in out
    group = next(tmp_path.glob("finetune-*"))
    run_cfg = load_config(FinetuneConfig, group / "seed-0" / "config.yaml")
    assert run_cfg.model.mode == "linear" and run_cfg.optim.lr == pytest.approx(1e-3)
    result = json.loads((group / "seed-0" / "result.json").read_text())
    assert result["train_size"] == 28  # 48 synthetic shapes (14 classes), half of each class
    assert math.isfinite(result["last_acc"])
    assert dataclasses.asdict(run_cfg.data)["label_fraction"] == 0.5


def test_resumed_seeds_tells_a_group_from_a_run(tmp_path):
    from act3d.train.common import resumed_seeds

    group, run, empty = tmp_path / "group", tmp_path / "run", tmp_path / "empty"
    group.mkdir()
    (group / "seeds.json").write_text("[2, 0]\n")
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    empty.mkdir()
    assert resumed_seeds(group, "fine-tune") == [2, 0]
    assert resumed_seeds(run, "fine-tune") is None
    with pytest.raises(FileNotFoundError, match=r"--resume .*empty: neither a fine-tune group \(seeds\.json\)"):
        resumed_seeds(empty, "fine-tune")
