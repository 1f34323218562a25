"""Evaluation: scores and voting, ``act3d eval``, the SVM probe, few-shot folds, embeddings.

Fixtures (h5 shape files, a few-shot ``.pkl`` fold folder, mesh and cloud files) are written
into ``tmp_path``; models are the ``tiny`` presets or hand-made modules.
"""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from act3d.cli import main
from act3d.config import load_config
from act3d.data import build_dataset
from act3d.eval.classify import evaluate_classifier, predict_logits, scores_from_confusion
from act3d.eval.embed import embed_files, expand_inputs, labels_from_parents
from act3d.eval.fewshot import draw_folds, fold_datasets, run_fewshot, standard_fold_datasets
from act3d.eval.plots import plot_confusion, tsne_2d
from act3d.eval.probe import svm_probe
from act3d.models.classifier import PointClassifier
from act3d.models.encoder_api import save_encoder
from act3d.models.student import EncoderConfig, PointEncoder
from act3d.train.finetune import FinetuneConfig, save_classifier

CLASSES = ("ball", "box", "rod")


def _cloud(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 3))
    if kind == 0:
        pts = x / np.linalg.norm(x, axis=1, keepdims=True)
    elif kind == 1:
        pts = x / np.abs(x).max(axis=1, keepdims=True)
    else:
        pts = np.stack([0.05 * x[:, 0], rng.uniform(-1, 1, n), 0.05 * x[:, 2]], axis=1)
    return (pts * rng.uniform(0.8, 1.2)).astype(np.float32)


@pytest.fixture(scope="module")
def h5_source(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("h5")
    for split, count in (("train", 10), ("test", 4)):
        rng = np.random.default_rng([1, len(split)])
        labels = np.arange(count * 3) % 3
        with h5py.File(folder / f"shapes_{split}.h5", "w") as f:
            f["data"] = np.stack([_cloud(int(k), 200, rng) for k in labels])
            f["label"] = labels.astype(np.int64)
            f.attrs["class_names"] = json.dumps(list(CLASSES))
    return f"h5:{folder}/shapes_{{split}}.h5"


class _MeanClassifier(nn.Module):
    """Logits = a fixed linear map of the per-cloud mean and spread (depends on augmentation)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(6, classes)
        torch.nn.init.normal_(self.lin.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([points.mean(1), points.std(1)], dim=-1))


class _SpreadEncoder(nn.Module):
    """A frozen 'encoder' whose features separate the fixture classes: per-axis spread."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        centred = points - points.mean(1, keepdim=True)
        return torch.cat([centred.std(1), centred.norm(dim=-1).std(1, keepdim=True)], dim=-1) * self.scale


# ----------------------------------------------------------------------------- scores, voting


def test_scores_from_confusion():
    conf = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    s = scores_from_confusion(conf)
    assert s.accuracy == pytest.approx(5 / 8)
    assert s.mean_class_accuracy == pytest.approx((0.75 + 0.5) / 2)  # class 2 absent: not averaged
    assert np.isnan(s.per_class_accuracy[2]) and s.count == 8
    with pytest.raises(ValueError, match="square"):
        scores_from_confusion(np.zeros((2, 3)))


def test_voting_averages_seeded_augmented_views(h5_source):
    test = build_dataset(h5_source, "test", 128, train=False, sampling="fps")
    model = _MeanClassifier()
    plain, labels = predict_logits(model, test)
    assert plain.shape == (12, 3) and labels.tolist() == [0, 1, 2] * 4
    voted, _ = predict_logits(model, test, vote=4, seed=1)
    assert torch.equal(voted, predict_logits(model, test, vote=4, seed=1)[0])  # seeded
    assert not torch.allclose(voted, plain)  # views are augmented
    assert not torch.allclose(voted, predict_logits(model, test, vote=4, seed=2)[0])
    # a 1-view vote is one augmented view; the 4-view vote is the mean of 4 such views
    views = [predict_logits(model, test, vote=1, seed=1)[0]]
    assert views[0].shape == plain.shape
    # with fresh FPS-pool subsets as the views' source
    pool = build_dataset(h5_source, "test", 128, train=True, sampling="fps")
    scores = evaluate_classifier(model, test, vote=3, vote_dataset=pool, seed=0)
    assert scores.count == 12 and 0.0 <= scores.accuracy <= 1.0
    with pytest.raises(ValueError, match="same shapes"):
        predict_logits(model, test, vote=2, vote_dataset=build_dataset(h5_source, "train", 128))


def test_cli_eval_with_voting_writes_scores_and_confusion(h5_source, tmp_path, capsys):
    torch.manual_seed(0)
    model = PointClassifier(EncoderConfig.tiny(num_groups=8, group_size=16), 3, mode="full")
    ckpt = save_classifier(model.eval(), tmp_path / "classifier.safetensors", class_names=CLASSES,
                           source=h5_source, num_points=128)
    assert main(["eval", str(ckpt), "--vote", "2", "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert scores["count"] == 12 and scores["vote"] == 2 and scores["class_names"] == list(CLASSES)
    assert np.array(scores["confusion"]).sum() == 12
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert "overall accuracy" in capsys.readouterr().out


def test_plots(tmp_path):
    path = plot_confusion(np.array([[5, 1], [2, 4]]), ["a", "b"], tmp_path / "c.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    xy = tsne_2d(np.random.default_rng(0).normal(size=(12, 5)))
    assert xy.shape == (12, 2) and np.isfinite(xy).all()


# ----------------------------------------------------------------------------- probe


def test_svm_probe_separates_separable_features(h5_source):
    train = build_dataset(h5_source, "train", 128, train=False, sampling="fps")
    test = build_dataset(h5_source, "test", 128, train=False, sampling="fps")
    result = svm_probe(_SpreadEncoder(), train, test)
    assert result["accuracy"] == pytest.approx(1.0)
    assert result["num_train"] == 30 and result["num_test"] == 12 and result["feature_dim"] == 4
    assert set(result["cv_accuracy"]) == {"0.001", "0.01", "0.1", "1.0", "10.0"}
    fixed = svm_probe(_SpreadEncoder(), train, test, C=0.5)
    assert fixed["C"] == 0.5 and fixed["cv_accuracy"] == {}


def test_cli_probe_with_a_saved_encoder(h5_source, tmp_path, capsys):
    torch.manual_seed(0)
    save_encoder(PointEncoder(EncoderConfig.tiny(num_groups=8, group_size=16)), tmp_path / "student.safetensors")
    out = tmp_path / "probe.json"
    assert main(["probe", str(tmp_path), "--data", h5_source, "--points", "128", "--C", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["feature_dim"] == 256 and 0.0 <= result["accuracy"] <= 1.0
    assert "linear SVM probe" in capsys.readouterr().out


# ----------------------------------------------------------------------------- few-shot


def test_drawn_folds_are_disjoint_and_fixed_by_seed():
    labels = np.repeat(np.arange(8), 12)
    folds = draw_folds(labels, way=5, shot=3, num_test=4, folds=10, seed=0)
    assert len(folds) == 10
    for fold in folds:
        assert len(fold.classes) == 5 and len(set(fold.classes)) == 5
        assert len(fold.train) == 15 and len(fold.test) == 20
        assert not set(fold.train) & set(fold.test)  # same pool: disjoint
        assert set(labels[fold.train]) == set(fold.classes) == set(labels[fold.test])
        assert np.bincount(labels[fold.train], minlength=8)[list(fold.classes)].tolist() == [3] * 5
    again = draw_folds(labels, way=5, shot=3, num_test=4, folds=10, seed=0)
    assert all(a.to_dict() == b.to_dict() for a, b in zip(folds, again))
    other = draw_folds(labels, way=5, shot=3, num_test=4, folds=10, seed=1)
    assert any(a.to_dict() != b.to_dict() for a, b in zip(folds, other))
    assert len({f.classes for f in folds}) > 1  # folds differ from each other
    split = draw_folds(labels, way=2, shot=2, test_labels=np.repeat(np.arange(8), 5), num_test=5, folds=2)
    assert all(len(f.test) == 10 for f in split)
    with pytest.raises(ValueError, match="qualify"):
        draw_folds(labels, way=9, shot=3, num_test=4)


def _write_fewshot_folder(root, way=3, shot=4, folds=2, test_per_class=3, points=200):
    """The standard layout: <root>/<way>way_<shot>shot/<fold>.pkl, dicts of (xyz+normals, label, class)."""
    folder = root / f"{way}way_{shot}shot"
    folder.mkdir(parents=True)
    for fold in range(folds):
        rng = np.random.default_rng(fold)
        classes = [7, 20, 33][:way]  # original ModelNet40 ids: car, laptop, table

        def items(count):
            out = []
            for label, original in enumerate(classes):
                for _ in range(count):
                    xyz = _cloud(label, points, rng)
                    out.append((np.concatenate([xyz, np.zeros_like(xyz)], axis=1), label, original))
            return out

        with open(folder / f"{fold}.pkl", "wb") as f:
            pickle.dump({"train": items(shot), "test": items(test_per_class)}, f)
    return root


def test_standard_fold_fixture_loads_and_runs(tmp_path):
    root = _write_fewshot_folder(tmp_path / "ModelNetFewshot")
    train, test = standard_fold_datasets(f"fewshot:{root}", 3, 4, 1, 128)
    assert len(train) == 12 and len(test) == 9
    assert train.class_names == ["car", "laptop", "table"]
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]
    assert train[0]["points"].shape == (128, 3)
    cfg = load_config(
        FinetuneConfig, "tiny",
        [f"data.source=fewshot:{root}", f"run.out_dir={tmp_path}", "optim.epochs=1", "optim.warmup_epochs=0"],
        stage="fewshot",
    )  # fmt: skip
    summary = run_fewshot(cfg, 3, 4, folds=2, group_dir=tmp_path / "fs")
    assert len(summary.records) == 2 and summary.folds_from.startswith("standard")
    values = summary.stats["last_acc"]["values"]
    assert summary.stats["last_acc"]["std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert (tmp_path / "fs" / "summary.md").read_text().count("| ") > 5


def test_cli_fewshot_draws_folds_from_a_labelled_source(h5_source, tmp_path, capsys):
    code = main([
        "fewshot", "scratch", "--way", "2", "--shot", "3", "--folds", "2", "--test-per-class", "2",
        "--data", h5_source, "--config", "tiny", "--set", f"run.out_dir={tmp_path}",
        "--set", "optim.epochs=1", "--set", "optim.warmup_epochs=0", "--set", "optim.batch_size=2",
        "--set", "data.num_samples=null", "--set", "data.val_samples=null",
    ])  # fmt: skip
    assert code == 0
    group = next(tmp_path.glob("fewshot-2w3s-*"))
    summary = json.loads((group / "summary.json").read_text())
    assert len(summary["runs"]) == 2 and "drawn" in summary["folds_from"]
    fold = json.loads((group / "fold-0" / "fold.json").read_text())
    assert len(fold["train"]) == 6 and len(fold["test"]) == 4
    assert "Few-shot 2-way 3-shot" in capsys.readouterr().out


def test_fold_datasets_relabel_to_episode_classes(h5_source):
    train = build_dataset(h5_source, "train", 128, train=True, sampling="fps")
    (fold,) = draw_folds(train.labels, way=2, shot=2, num_test=3, folds=1, seed=4)
    tr, te = fold_datasets(fold, train, train)
    assert sorted(set(tr.labels.tolist())) == [0, 1] and len(te) == 6
    assert tr.class_names == [CLASSES[c] for c in fold.classes]
    assert int(tr[0]["label"]) == 0


# ----------------------------------------------------------------------------- embeddings


def _write_inputs(root) -> list:
    rng = np.random.default_rng(0)
    (root / "chairs").mkdir(parents=True)
    (root / "tables").mkdir()
    np.save(root / "chairs" / "a.npy", _cloud(0, 300, rng))
    np.savetxt(root / "chairs" / "b.xyz", _cloud(1, 300, rng))
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    faces = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
    with open(root / "tables" / "tet.off", "w") as f:
        f.write("OFF\n4 4 0\n" + "".join(f"{x} {y} {z}\n" for x, y, z in verts)
                + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces))
    with open(root / "tables" / "tet.obj", "w") as f:
        f.write("".join(f"v {x} {y} {z}\n" for x, y, z in verts) + "".join(f"f {a+1} {b+1} {c+1}\n" for a, b, c in faces))
    with open(root / "tables" / "tri.ply", "w") as f:
        f.write("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
                "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
                + "".join(f"{x} {y} {z}\n" for x, y, z in verts)
                + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces))
    return [root / "chairs", root / "tables"]


def test_embed_mixed_files_and_cli_with_tsne(tmp_path, capsys):
    torch.manual_seed(0)
    encoder = PointEncoder(EncoderConfig.tiny(num_groups=8, group_size=16)).eval()
    inputs = _write_inputs(tmp_path / "shapes")
    paths = expand_inputs(inputs)
    assert [p.suffix for p in paths] == [".npy", ".xyz", ".obj", ".off", ".ply"]
    feats, names = embed_files(encoder, inputs, num_points=128)
    assert feats.shape == (5, 256) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.array_equal(feats, embed_files(encoder, inputs, num_points=128)[0])  # deterministic
    labels, classes = labels_from_parents(names)
    assert labels.tolist() == [0, 0, 1, 1, 1] and classes == ["chairs", "tables"]
    save_encoder(encoder, tmp_path / "student.safetensors")
    out = tmp_path / "feats.npy"
    code = main(["embed", str(tmp_path / "student.safetensors"), *map(str, inputs), "--out", str(out),
                 "--points", "128", "--tsne", str(tmp_path / "tsne.png"), "--device", "cpu"])
    assert code == 0
    saved = np.load(out)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert saved.shape == (5, 256) and sidecar["inputs"] == names and sidecar["class_names"] == classes
    np.testing.assert_allclose(saved, feats, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "tsne.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError):
        expand_inputs([tmp_path / "missing.ply"])
