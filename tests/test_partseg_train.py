"""Part segmentation: the part-labelled synthetic world, ``act3d partseg train|eval`` end to end
on ``synthetic-parts`` and on a ShapeNetPart fixture, init from a student, seeds, bad inputs.

The ShapeNetPart fixture is written by the tests into ``tmp_path`` in the exact on-disk
layout: ``<synset>/<id>.txt`` rows ``x y z nx ny nz part`` and
``train_test_split/shuffled_{train,val,test}_file_list.json`` (entries
``shape_data/<synset>/<id>``); its shapes are synthetic airplanes and mugs whose parts are
mapped onto ShapeNetPart's Airplane (0-3) and Mug (36, 37) ids.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch

from act3d.cli import main
from act3d.config import load_config
from act3d.data import build_dataset
from act3d.data.synthetic import (
    CATEGORY_PARTS,
    CLASSES,
    NUM_PARTS,
    PART_LABELS,
    PART_NAMES,
    generate_part_shape,
    generate_shape,
    shape_part_triangles,
    shape_triangles,
)
from act3d.models.encoder_api import save_encoder
from act3d.models.student import EncoderConfig, PointEncoder
from act3d.train.partseg import (
    PartSegConfig,
    PartSegTask,
    load_part_segmenter,
    partseg_seeds,
    partseg_train,
    scale_shift,
)

# Test-sized settings: 128 points in 8 patches of 16, a narrow head, 2 short epochs, one thread.
TINY = [
    "data.num_points=128", "data.num_samples=28", "data.val_samples=14", "data.test_samples=14",
    "model.encoder=tiny", "model.num_groups=8", "model.group_size=16", "model.category_dim=16",
    "model.propagation_dims=[32, 32]", "model.head_dims=[32, 16]",
    "optim.epochs=2", "optim.warmup_epochs=0", "optim.batch_size=4", "eval_batch_size=16",
    "runtime.device=cpu", "runtime.threads=1", "picture=false",
    "run.progress=off", "run.tensorboard=false", "run.plots=false",
]  # fmt: skip


def _sets(*extra: str) -> list[str]:
    return [a for kv in (*TINY, *extra) for a in ("--set", kv)]


def _cfg(tmp_path, *extra: str) -> PartSegConfig:
    return load_config(PartSegConfig, "tiny", [*TINY, f"run.out_dir={tmp_path / 'runs'}", *extra], stage="partseg")


# ----------------------------------------------------------------------------- the synthetic parts


# generate_shape(label, 32, default_rng(100 + label)): first point, last point, sum of |coords|,
# recorded before the shapes were given part labels (and two scan-mode shapes).
_GOLDEN = {
    "airplane": (-0.217906, 0.006959, -0.906274, 0.487839, 0.002262, -0.057729, 11.169113, 1.531591, 9.975239),
    "bed": (0.162508, -0.171522, 0.747388, -0.109222, -0.2445, 0.692249, 6.936006, 4.54287, 16.06758),
    "bookshelf": (0.345566, 0.459629, 0.153243, -0.069057, -0.922839, -0.177394, 9.515922, 14.959812, 4.872085),
    "bottle": (-0.174583, -0.189501, -0.07952, -0.161236, 0.241695, -0.101423, 3.842853, 10.171419, 4.045596),
    "car": (0.037579, -0.273758, 0.786703, -0.067824, -0.193699, -0.978714, 7.188702, 3.849056, 16.000144),
    "chair": (-0.475183, -0.674714, -0.246218, -0.414245, 0.0141, 0.455743, 10.984679, 8.529933, 10.160586),
    "guitar": (0.103541, -0.49212, 0.033754, 0.190421, -0.267141, 0.033754, 3.604111, 9.974035, 1.017077),
    "lamp": (-0.366633, -0.404935, -0.135231, -0.043692, -0.342693, 0.097499, 5.770747, 14.485622, 7.062991),
    "monitor": (0.416808, 0.191797, -0.080261, -0.926014, 0.377164, 0.015658, 10.742706, 11.279407, 2.125593),
    "mug": (0.753297, 0.041102, -0.029396, -0.608916, -0.177976, -0.182112, 10.621332, 12.426696, 8.427281),
    "sofa": (0.763863, -0.053789, 0.206534, -0.770455, -0.093072, 0.482132, 15.655074, 3.626892, 7.69999),
    "stool": (0.264535, 0.669043, 0.4025, 0.386969, -0.73812, -0.233054, 7.182485, 19.650989, 6.518572),
    "table": (0.511355, -0.243416, -0.236016, 0.53317, -0.243416, 0.133965, 13.788611, 10.401639, 7.9359),
    "vase": (-0.52802, -0.61539, 0.394227, -0.538281, 0.791754, -0.138188, 12.202932, 15.375563, 7.996208),
    "chair-scan": (0.323582, 0.39183, -0.069647, -0.279706, 0.143359, -0.474016, 8.738885, 10.835989, 10.040682),
    "mug-scan": (0.429302, -0.358418, -0.117723, 0.158504, -0.320623, 0.347466, 8.351773, 10.569407, 8.297757),
}  # fmt: skip


def _fingerprint(points: np.ndarray) -> np.ndarray:
    p = points.astype(np.float64)
    return np.concatenate([p[0], p[-1], np.abs(p).sum(axis=0)])


def test_existing_synthetic_shapes_are_unchanged_by_part_labels():
    for label, name in enumerate(CLASSES):
        got = _fingerprint(generate_shape(label, 32, np.random.default_rng(100 + label)))
        np.testing.assert_allclose(got, _GOLDEN[name], atol=2e-6, err_msg=name)
    for name in ("chair", "mug"):
        got = _fingerprint(generate_shape(CLASSES.index(name), 32, np.random.default_rng(7), scan=True))
        np.testing.assert_allclose(got, _GOLDEN[f"{name}-scan"], atol=2e-6, err_msg=f"{name}-scan")
    # the labelled path draws exactly what the unlabelled one does
    for label in range(len(CLASSES)):
        tris, parts = shape_part_triangles(label, np.random.default_rng([5, label]))
        np.testing.assert_array_equal(tris, shape_triangles(label, np.random.default_rng([5, label])))
        assert parts.shape == (len(tris),)
        points, _ = generate_part_shape(label, 64, np.random.default_rng([6, label]))
        np.testing.assert_array_equal(points, generate_shape(label, 64, np.random.default_rng([6, label])))


def test_part_table_is_consistent():
    assert all(len(PART_NAMES[c]) >= 2 for c in CLASSES)
    flat = [p for parts in CATEGORY_PARTS for p in parts]
    assert flat == list(range(NUM_PARTS)) and len(PART_LABELS) == NUM_PARTS
    for c, parts in zip(CLASSES, CATEGORY_PARTS):
        assert [PART_LABELS[p] for p in parts] == [f"{c}/{n}" for n in PART_NAMES[c]]


def test_part_labels_cover_every_part_and_mean_the_same_thing():
    y_of: dict[str, list[float]] = {}
    for label, name in enumerate(CLASSES):
        seen: set[int] = set()
        for i in range(14):
            points, parts = generate_part_shape(label, 512, np.random.default_rng([0, 23, 0, i]))
            assert set(parts.tolist()) <= set(CATEGORY_PARTS[label]), name
            assert len(set(parts.tolist())) >= 2, f"{name} #{i} has a single part"
            seen |= set(parts.tolist())
            for pid in set(parts.tolist()):
                y_of.setdefault(PART_LABELS[pid], []).append(float(points[parts == pid, 1].mean()))
        missing = [PART_LABELS[p] for p in CATEGORY_PARTS[label] if p not in seen]
        assert not missing, f"parts never generated: {missing}"
    height = {k: float(np.mean(v)) for k, v in y_of.items()}  # y is up
    assert height["chair/legs"] < height["chair/seat"] < height["chair/back"]
    assert height["lamp/base"] < height["lamp/pole"]
    assert height["table/legs"] < height["table/top"]
    assert height["bottle/body"] < height["bottle/neck"] < height["bottle/cap"]
    assert height["guitar/body"] < height["guitar/neck"] < height["guitar/head"]
    assert height["monitor/stand"] < height["monitor/screen"]


def test_synthetic_parts_source_has_the_shapenetpart_form():
    train = build_dataset("synthetic-parts", "train", 128, num_samples=len(CLASSES))
    val = build_dataset("synthetic-parts", "val", 128, num_samples=3)
    assert train.num_parts == NUM_PARTS and train.num_classes == len(CLASSES) == len(train.category_parts)
    assert train.category_parts["mug"] == list(CATEGORY_PARTS[CLASSES.index("mug")])
    for i in (0, 9):
        s = train[i]
        assert s["points"].dtype == torch.float32 and s["points"].shape == (128, 3)
        assert s["seg"].dtype == torch.int64 and s["seg"].shape == (128,)
        assert int(s["label"]) == i and set(s["seg"].tolist()) <= set(CATEGORY_PARTS[i])
        assert float(s["points"].norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.equal(val[0]["points"], train[0]["points"])
    test_a = build_dataset("synthetic-parts", "test", 128, num_samples=2)
    test_b = build_dataset("synthetic-parts", "test", 128, num_samples=2)
    assert torch.equal(test_a[1]["points"], test_b[1]["points"])  # test mode is deterministic
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic-parts", "pretrain", 128)
    with pytest.raises(ValueError, match="no parameters"):
        build_dataset("synthetic-parts:x", "train", 128)


# ----------------------------------------------------------------------------- pieces of the trainer


def test_scale_shift_is_one_isotropic_scale_and_shift_per_shape():
    torch.manual_seed(1)
    x = torch.randn(6, 50, 3)
    y = scale_shift(x, (0.8, 1.25), 0.1)
    ratio = (y - y.mean(dim=1, keepdim=True)) / (x - x.mean(dim=1, keepdim=True))
    scale = ratio.flatten(1).median(dim=1).values
    assert torch.allclose(ratio, scale[:, None, None].expand_as(ratio), atol=1e-3)
    assert ((scale >= 0.8) & (scale <= 1.25)).all()
    shift = (y - x * scale[:, None, None])[:, 0]
    assert (shift.abs() <= 0.1 + 1e-6).all()


def test_validation_metrics_average_shapes_and_categories(tmp_path):
    task = PartSegTask(_cfg(tmp_path))
    sums = {
        "points": torch.tensor(100), "loss": torch.tensor(50.0), "correct": torch.tensor(80),
        "iou_sum": torch.tensor([2.7, 0.5, 0.0]), "shapes": torch.tensor([3, 1, 0]),
    }  # fmt: skip
    m = task.validation_metrics(sums)
    assert m["ins_miou"] == pytest.approx(3.2 / 4) and m["cls_miou"] == pytest.approx((0.9 + 0.5) / 2)
    assert m["acc"] == pytest.approx(0.8) and m["loss"] == pytest.approx(0.5)


def test_loss_decreases_on_a_fixed_batch(tmp_path, one_thread):
    task = PartSegTask(_cfg(tmp_path, "augment=none", "model.dropout=0.0", "model.drop_path=0.0"))
    model = task.build_model()
    data = task.train_dataset()
    batch = torch.utils.data.default_collate([data[i] for i in range(8)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(20):
        loss, logs = task.training_step(model, batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.75 * losses[0], losses
    assert 0.0 <= float(logs["acc"]) <= 1.0


def test_init_from_a_student_checkpoint_loads_every_backbone_tensor(tmp_path):
    torch.manual_seed(3)
    encoder = PointEncoder(EncoderConfig.tiny(num_groups=8, group_size=16))
    path = save_encoder(encoder, tmp_path / "student.safetensors")
    task = PartSegTask(_cfg(tmp_path, f"model.init={path}", "model.num_groups=4"))
    model = task.build_model()
    assert task.load_report == {"init": str(path), "loaded": len(encoder.state_dict())}
    for key, value in encoder.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert model.backbone.config.num_groups == 4  # the grouping comes from this config
    assert model.num_parts == NUM_PARTS and model.num_categories == len(CLASSES)


# ----------------------------------------------------------------------------- commands


def test_partseg_train_and_eval_cli_on_synthetic_parts(tmp_path, capsys, one_thread):
    torch.manual_seed(3)
    encoder = PointEncoder(EncoderConfig.tiny(num_groups=8, group_size=16))
    student = save_encoder(encoder, tmp_path / "student.safetensors")
    rc = main(["partseg", "train", "--data", "synthetic-parts", "--init", str(student), "--config", "tiny",
               *_sets("picture=true"), "--set", f"run.out_dir={tmp_path / 'runs'}"])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["backbone_keys_loaded"] == len(encoder.state_dict()) and result["init"] == str(student)
    assert result["selected_on_test"] is False and result["selection"].startswith("val split")
    assert (result["train_size"], result["val_size"], result["test_size"]) == (28, 14, 14)
    for key in ("last_instance_miou", "last_class_miou", "best_instance_miou", "best_class_miou"):
        assert 0.0 < result[key] <= 1.0, key
    assert result["best_epoch"] in (1, 2) and result["epochs"] == 2
    assert set(result["last_category_iou"]) == set(CLASSES)
    for name in ("README.md", "eval.md", "part_segmenter.safetensors", "part_segmenter-best.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "parts.png").stat().st_size > 1000
    assert "instance mIoU" in capsys.readouterr().out
    seg = load_part_segmenter(run)
    assert seg.weights == "last" and seg.taxonomy.num_parts == NUM_PARTS and seg.data.num_points == 128

    rc = main(["partseg", "eval", str(run / "part_segmenter.safetensors"), "--data", "synthetic-parts",
               "--split", "test", "--picture", "none", "--out", str(tmp_path / "ev")])
    assert rc == 0
    again = json.loads((tmp_path / "ev" / "result.json").read_text())
    assert again["shapes"] == 14 and not (tmp_path / "ev" / "parts.png").exists()
    assert again["instance_miou"] == pytest.approx(result["last_instance_miou"], abs=1e-9)
    assert again["class_miou"] == pytest.approx(result["last_class_miou"], abs=1e-9)
    assert again["category_iou"] == pytest.approx(result["last_category_iou"], abs=1e-9)
    out = capsys.readouterr().out
    assert "class mIoU" in out and "| chair |" in out
    rc = main(["partseg", "eval", str(run / "part_segmenter-best.safetensors"), "--picture", "none",
               "--out", str(tmp_path / "ev-best")])
    best = json.loads((tmp_path / "ev-best" / "result.json").read_text())
    assert rc == 0 and best["weights"] == "best"
    assert best["instance_miou"] == pytest.approx(result["best_instance_miou"], abs=1e-9)


def _write_shapenetpart(root, per_split=(("train", 4), ("val", 2), ("test", 2)), n=200):
    """ShapeNetPart layout with synthetic airplanes and mugs; returns the folder."""
    base = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    spec = [("airplane", "02691156", (0, 1, 2, 3)), ("mug", "03797390", (36, 37))]
    entries: dict[str, list[str]] = {split: [] for split, _ in per_split}
    k = 0
    for name, synset, ids in spec:
        (base / synset).mkdir(parents=True)
        label = CLASSES.index(name)
        for split, count in per_split:
            for _ in range(count):
                points, parts = generate_part_shape(label, n, np.random.default_rng([11, k]))
                local = parts - CATEGORY_PARTS[label][0]
                normals = np.tile([0.0, 1.0, 0.0], (n, 1))
                rows = np.concatenate([points, normals, np.asarray(ids)[local][:, None]], axis=1)
                np.savetxt(base / synset / f"{synset}_{k:03d}.txt", rows, fmt="%.6f")
                entries[split].append(f"shape_data/{synset}/{synset}_{k:03d}")
                k += 1
    (base / "train_test_split").mkdir()
    for split, names in entries.items():
        (base / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(names))
    return root


def test_partseg_train_on_a_shapenetpart_fixture(tmp_path, capsys):
    root = _write_shapenetpart(tmp_path / "data")
    nulls = ["data.num_samples=null", "data.val_samples=null", "data.test_samples=null", "optim.epochs=1"]
    record = partseg_train(_cfg(tmp_path, f"data.source=shapenetpart:{root}", *nulls), run_dir=tmp_path / "val")
    # selection on val: the val shapes are taken out of the loader's train (= train + val)
    assert (record.train_size, record.val_size, record.test_size) == (8, 4, 4)
    assert record.selected_on_test is False
    assert set(record.last_category_iou) == {"Airplane", "Mug"}
    result = json.loads((tmp_path / "val" / "result.json").read_text())
    last = result["evaluations"]["last epoch"]
    assert last["category_shapes"] == {"Airplane": 2, "Mug": 2}
    assert last["class_miou"] == pytest.approx((last["category_iou"]["Airplane"] + last["category_iou"]["Mug"]) / 2)
    seg = load_part_segmenter(tmp_path / "val")
    assert seg.taxonomy.num_parts == 50 and len(seg.taxonomy.category_names) == 16
    assert seg.model.num_parts == 50 and seg.model.num_categories == 16
    capsys.readouterr()
    assert main(["partseg", "eval", str(tmp_path / "val"), "--data", "synthetic-parts", "--picture", "none",
                 "--out", str(tmp_path / "ev")]) == 2  # another taxonomy: refused, not mis-scored
    assert "not the checkpoint's" in capsys.readouterr().err

    # the reference's protocol: train on train + val, choose the best epoch on test
    record = partseg_train(_cfg(tmp_path, f"data.source=shapenetpart:{root}", *nulls, "selection=test"),
                           run_dir=tmp_path / "test")
    assert (record.train_size, record.val_size) == (12, 4) and record.selected_on_test is True
    assert "optimistic" in (tmp_path / "test" / "eval.md").read_text()


def test_seeds_report_mean_and_sample_std_and_resume_keeps_finished_runs(tmp_path, capsys):
    rc = main(["partseg", "train", "--data", "synthetic-parts", "--init", "scratch", "--seeds", "0,1",
               *_sets("optim.epochs=1", "data.num_samples=14", "data.val_samples=14", "data.test_samples=14"),
               "--set", f"run.out_dir={tmp_path / 'runs'}"])
    assert rc == 0
    (group,) = (tmp_path / "runs").iterdir()
    summary = json.loads((group / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and [r["seed"] for r in summary["runs"]] == [0, 1]
    values = [r["last_instance_miou"] for r in summary["runs"]]
    assert summary["stats"]["last_instance_miou"]["mean"] == pytest.approx(statistics.fmean(values))
    assert summary["stats"]["last_instance_miou"]["std"] == pytest.approx(statistics.stdev(values))
    assert "±" in (group / "summary.md").read_text()
    again = partseg_seeds(_cfg(tmp_path), [0, 1], resume=group)  # both finished: nothing retrains
    assert [r.run_dir for r in again.records] == [r["run_dir"] for r in summary["runs"]]


def test_bad_inputs_fail_before_any_run_folder_and_name_the_option(tmp_path, capsys):
    out = ["--set", f"run.out_dir={tmp_path / 'runs'}"]
    assert main(["partseg", "train", "--data", "modelnet40", "--config", "tiny", *out]) == 2
    err = capsys.readouterr().err
    assert "data.source" in err and "--data" in err and "valid choices" in err
    assert main(["partseg", "train", "--data", f"shapenetpart:{tmp_path / 'missing'}", "--config", "tiny", *out]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "missing" in err and "train_test_split" in err
    assert main(["partseg", "train", "--config", "tiny", "--set", "optim.lrr=1e-3", *out]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["partseg", "train", "--config", "tiny", "--init", str(tmp_path / "nope.safetensors"), *out]) == 2
    assert "model.init" in capsys.readouterr().err
    assert main(["partseg", "train", "--config", "tiny", "--seeds", "0,x", *out]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["partseg", "eval", str(tmp_path / "nothing")]) == 2
    assert "part_segmenter" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
