"""Dataset loaders for every on-disk layout of ACT_SPEC §4, written into tmp_path."""

from __future__ import annotations

import json
import os
import pickle

import h5py
import numpy as np
import pytest
import torch

import act3d.data.datasets as dsmod
from act3d.data import build_dataset
from act3d.data.datasets import MODELNET40_CLASSES, SCANOBJECTNN_CLASSES
from act3d.data.sampling import fps_indices, pool_size_for
from act3d.data.transforms import ScaleTranslate

N_RAW = 160  # points per stored shape
N = 64  # points asked for (pool = 75)


def _clouds(count, n=N_RAW, cols=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((n, cols)) * 2 - 1).astype(np.float32) for _ in range(count)]


def _normalize(p):
    c = p - p.mean(axis=0)
    return c / np.sqrt((c * c).sum(axis=1)).max()


def make_shapenet(root, n_train=4, n_test=2):
    root.mkdir(parents=True)
    pc = root / "shapenet_pc"
    pc.mkdir()
    names = [f"02691156-{k:04d}.npy" for k in range(n_train + n_test)]
    for name, cloud in zip(names, _clouds(len(names))):
        np.save(pc / name, cloud)
    lists = root / "ShapeNet-55"
    lists.mkdir()
    (lists / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (lists / "test.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


def make_modelnet_dat(root, counts=(5, 3)):
    root.mkdir(parents=True)
    for split, count in zip(("train", "test"), counts):
        clouds = _clouds(count, cols=6, seed=count)
        labels = [np.array([k % 40], dtype=np.int32) for k in range(count)]
        with open(root / f"modelnet40_{split}_8192pts_fps.dat", "wb") as f:
            pickle.dump((clouds, labels), f)
    return root


def make_modelnet_text(root):
    base = root / "modelnet40_normal_resampled"
    base.mkdir(parents=True)
    classes = ["airplane", "night_stand", "chair"]
    (base / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = {"train": [], "test": []}
    clouds = iter(_clouds(9, cols=6, seed=5))
    for cls in classes:
        (base / cls).mkdir()
        for k in range(1, 4):
            sid = f"{cls}_{k:04d}"
            np.savetxt(base / cls / f"{sid}.txt", next(clouds), delimiter=",", fmt="%.6f")
            ids["train" if k < 3 else "test"].append(sid)
    for split, lst in ids.items():
        (base / f"modelnet40_{split}.txt").write_text("\n".join(lst) + "\n")
    return root


def write_h5(path, data, label, **attrs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def make_scanobjectnn(root):
    files = {
        "main_split/training_objectdataset.h5": 6, "main_split/test_objectdataset.h5": 3,
        "main_split_nobg/training_objectdataset.h5": 5, "main_split_nobg/test_objectdataset.h5": 2,
        "main_split/training_objectdataset_augmentedrot_scale75.h5": 7,
        "main_split/test_objectdataset_augmentedrot_scale75.h5": 4,
    }
    for rel, count in files.items():
        data = np.stack(_clouds(count, seed=count))
        write_h5(root / "h5_files" / rel, data, (np.arange(count) % 15).astype(np.int64))
    return root


def make_fewshot(root, way=5, shot=2):
    d = root / f"{way}way_{shot}shot"
    d.mkdir(parents=True)
    clouds = iter(_clouds(way * (shot + 1), cols=6, seed=9))
    originals = [3, 8, 12, 30, 33][:way]
    fold = {
        "train": [(next(clouds), j, originals[j]) for j in range(way) for _ in range(shot)],
        "test": [(next(clouds), np.int64(j), originals[j]) for j in range(way)],
    }
    with open(d / "0.pkl", "wb") as f:
        pickle.dump(fold, f)
    return root


def make_shapenetpart(root):
    base = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    entries = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(4)
    spec = [("02691156", (0, 1, 2, 3)), ("03797390", (36, 37))]
    k = 0
    for synset, parts in spec:
        (base / synset).mkdir(parents=True)
        for split in ("train", "train", "val", "test"):
            rows = np.concatenate([rng.random((N_RAW, 6)), rng.choice(parts, (N_RAW, 1))], axis=1)
            np.savetxt(base / synset / f"s{k}.txt", rows, fmt="%.5f")
            entries[split].append(f"shape_data/{synset}/s{k}")
            k += 1
    (base / "train_test_split").mkdir()
    for split, lst in entries.items():
        (base / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(lst))
    return base


def _check_sample(s, n=N, seg=False):
    assert s["points"].dtype == torch.float32 and s["points"].shape == (n, 3)
    assert s["label"].dtype == torch.int64 and s["label"].shape == ()
    assert torch.isfinite(s["points"]).all()
    if seg:
        assert s["seg"].dtype == torch.int64 and s["seg"].shape == (n,)


# --------------------------------------------------------------------------- loaders


def test_shapenet_layout_and_splits(tmp_path):
    root = make_shapenet(tmp_path / "ShapeNet55-34")
    train = build_dataset(f"shapenet:{root}", "train", N)
    assert len(train) == 4 and train.num_classes == 0
    s = train[0]
    _check_sample(s)
    assert int(s["label"]) == -1
    assert len(build_dataset(f"shapenet:{root}", "pretrain", N)) == 6
    test = build_dataset("shapenet", "test", N, root=str(root / "ShapeNet-55"))
    assert len(test) == 2
    torch.testing.assert_close(test[1]["points"], test[1]["points"])  # deterministic at test time
    torch.testing.assert_close(s["points"].norm(dim=1).max(), torch.tensor(1.0))


def test_modelnet40_dat_pickles(tmp_path):
    root = make_modelnet_dat(tmp_path / "ModelNet40")
    ds = build_dataset(f"modelnet40:{root}", "train", N)
    assert len(ds) == 5 and ds.num_classes == 40 and ds.class_names == list(MODELNET40_CLASSES)
    _check_sample(ds[3])
    assert int(ds[3]["label"]) == 3
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]
    assert len(build_dataset(f"modelnet40:{root}", "test", N)) == 3


def test_modelnet40_text_layout_and_env_root(tmp_path, monkeypatch):
    make_modelnet_text(tmp_path / "data" / "ModelNet40")
    monkeypatch.setenv("ACT3D_DATA_ROOT", str(tmp_path / "data"))
    ds = build_dataset("modelnet40", "train", N)
    assert ds.class_names == ["airplane", "night_stand", "chair"]
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    _check_sample(ds[2])
    assert int(ds[2]["label"]) == 1  # night_stand_0001: class name with an underscore
    # the test sample is FPS(raw) normalised; check against the text file itself
    test = build_dataset("modelnet40", "test", N)
    raw = np.loadtxt(tmp_path / "data/ModelNet40/modelnet40_normal_resampled/chair/chair_0003.txt",
                     delimiter=",")[:, :3].astype(np.float32)
    expect = _normalize(raw[fps_indices(raw, N)].astype(np.float64))
    np.testing.assert_allclose(test[2]["points"].numpy(), expect, atol=1e-5)


@pytest.mark.parametrize("variant, sizes", [("OBJ_BG", (6, 3)), ("OBJ_ONLY", (5, 2)), ("PB_T50_RS", (7, 4))])
def test_scanobjectnn_variants(tmp_path, variant, sizes):
    root = make_scanobjectnn(tmp_path / "ScanObjectNN")
    train = build_dataset(f"scanobjectnn:{variant}:{root}", "train", N)
    test = build_dataset(f"scanobjectnn:{variant.lower()}", "test", N, root=str(root))
    assert (len(train), len(test)) == sizes
    assert train.num_classes == 15 and train.class_names == list(SCANOBJECTNN_CLASSES)
    _check_sample(train[1])
    assert int(train[4]["label"]) == 4


def test_fewshot_fold(tmp_path):
    root = make_fewshot(tmp_path / "ModelNetFewshot")
    train = build_dataset(f"fewshot:5:2:0:{root}", "train", N)
    test = build_dataset("fewshot:5way:2shot:0", "test", N, root=str(root))
    assert len(train) == 10 and len(test) == 5 and train.num_classes == 5
    assert train.class_names == [MODELNET40_CLASSES[i] for i in (3, 8, 12, 30, 33)]
    assert test.labels.tolist() == [0, 1, 2, 3, 4]
    _check_sample(test[4])


def test_shapenetpart(tmp_path):
    root = make_shapenetpart(tmp_path)
    train = build_dataset(f"shapenetpart:{tmp_path}", "train", N)
    test = build_dataset(f"shapenetpart:{root}", "test", N)
    assert len(train) == 6 and len(test) == 2  # train = train + val
    assert train.num_classes == 16 and train.num_parts == 50
    assert train.category_parts["Mug"] == [36, 37]
    s = test[1]
    _check_sample(s, seg=True)
    assert int(s["label"]) == train.class_names.index("Mug")
    assert set(s["seg"].tolist()) <= {36, 37}
    # more points than stored: resampled (the ShapeNetPart protocol), seg stays aligned
    big = build_dataset(f"shapenetpart:{root}", "test", 2 * N_RAW)
    b = big[0]
    _check_sample(b, n=2 * N_RAW, seg=True)
    assert set(b["seg"].tolist()) <= {0, 1, 2, 3}


def test_generic_h5_with_split_placeholder_and_names(tmp_path):
    data = np.stack(_clouds(4))
    write_h5(tmp_path / "mine_train.h5", data, np.array([0, 1, 1, 0]), class_names=json.dumps(["cup", "box"]))
    write_h5(tmp_path / "mine_test.h5", data[:2], np.array([[1], [0]]))
    tr = build_dataset(f"h5:{tmp_path}/mine_{{split}}.h5", "train", N)
    te = build_dataset(f"h5:{tmp_path}/mine_{{split}}.h5", "test", N)
    assert tr.class_names == ["cup", "box"] and len(tr) == 4
    assert te.class_names == ["class_0", "class_1"] and te.labels.tolist() == [1, 0]
    _check_sample(te[0])


def test_dataloader_collates(tmp_path):
    root = make_scanobjectnn(tmp_path)
    ds = build_dataset(f"scanobjectnn:OBJ_BG:{root}", "train", N, transform=ScaleTranslate())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["points"].shape == (3, N, 3) and batch["label"].shape == (3,)


# --------------------------------------------------------------------------- sampling protocol


def test_fps_pool_protocol_train_and_test(tmp_path):
    raw = np.stack(_clouds(2))
    path = write_h5(tmp_path / "a.h5", raw, np.array([0, 1]))
    test = build_dataset(f"h5:{path}", "test", N)
    np.testing.assert_array_equal(test[0]["points"].numpy(), raw[0][fps_indices(raw[0], N)])
    train = build_dataset(f"h5:{path}", "train", N, seed=3)
    pool = raw[1][fps_indices(raw[1], pool_size_for(N, N_RAW))]
    assert pool.shape == (75, 3)
    train.set_epoch(0)
    a = train[1]["points"].numpy()
    rows = {tuple(r) for r in pool}
    assert all(tuple(r) in rows for r in a) and len({tuple(r) for r in a}) == N
    b = train[1]["points"].numpy()
    np.testing.assert_array_equal(a, b)  # same (seed, epoch, index) -> same subset
    train.set_epoch(1)
    assert not np.array_equal(a, train[1]["points"].numpy())
    other_seed = build_dataset(f"h5:{path}", "train", N, seed=4)
    other_seed.set_epoch(0)
    assert not np.array_equal(a, other_seed[1]["points"].numpy())


def test_fps_runs_once_per_shape_and_disk_cache(tmp_path, monkeypatch):
    root = make_shapenet(tmp_path / "sn")
    calls = []

    def counting(points, m, start=0):
        calls.append(np.asarray(points).shape)
        return fps_indices(points, m, start)

    monkeypatch.setattr(dsmod, "fps_indices", counting)
    cache = tmp_path / "cache"
    ds = build_dataset(f"shapenet:{root}", "train", N, sampling="fps", cache_dir=str(cache))
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
    assert len(calls) == 4, "one FPS per shape, never per epoch"
    assert len(list(cache.rglob("*.npy"))) == 4
    again = build_dataset(f"shapenet:{root}", "train", N, sampling="fps", cache_dir=str(cache))
    again[0]
    assert len(calls) == 4, "a second dataset reads the on-disk cache"
    # a changed file invalidates its entry
    f = root / "shapenet_pc" / "02691156-0000.npy"
    np.save(f, np.random.default_rng(7).random((N_RAW + 8, 3)).astype(np.float32))
    fresh = build_dataset(f"shapenet:{root}", "train", N, sampling="fps", cache_dir=str(cache))
    fresh[0]
    fresh[1]
    assert len(calls) == 5
    # precompute batches equal-sized shapes
    calls.clear()
    bulk = build_dataset(f"shapenet:{root}", "pretrain", N, sampling="fps")
    bulk.precompute(batch_size=8)
    assert len(calls) == 2 and sorted(c[0] for c in calls) == [1, 5]
    bulk[5]
    assert len(calls) == 2


def test_transform_gets_per_sample_generator(tmp_path):
    raw = np.stack(_clouds(3))
    path = write_h5(tmp_path / "a.h5", raw, np.array([0, 1, 2]))
    ds = build_dataset(f"h5:{path}", "test", N, transform=ScaleTranslate())
    one, two = ds[0]["points"], ds[0]["points"]
    torch.testing.assert_close(one, two)  # test mode: fixed per index
    base = build_dataset(f"h5:{path}", "test", N)[0]["points"]
    assert not torch.allclose(one, base)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_clear_errors(tmp_path):
    root = make_shapenet(tmp_path / "sn")
    with pytest.raises(ValueError, match=r"02691156-0000.npy.*160 points, fewer than the 200"):
        build_dataset(f"shapenet:{root}", "train", 200)[0]
    bad = write_h5(tmp_path / "keys.h5", np.zeros((2, 8, 3)), np.zeros(2))
    with h5py.File(bad, "a") as f:
        del f["label"]
    with pytest.raises(ValueError, match=r"keys.h5.*missing h5 dataset 'label'"):
        build_dataset(f"h5:{bad}", "train", 4)
    shp = write_h5(tmp_path / "shape.h5", np.zeros((2, 8)), np.zeros(2))
    with pytest.raises(ValueError, match=r"shape.h5.*'data' must be \(M, N, 3\)"):
        build_dataset(f"h5:{shp}", "train", 4)
    nan = np.random.default_rng(0).random((3, 8, 3))
    nan[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"nan.h5.*NaN/inf.*index 1"):
        build_dataset(f"h5:{write_h5(tmp_path / 'nan.h5', nan, np.zeros(3))}", "train", 4)
    lab = write_h5(tmp_path / "lab.h5", np.zeros((2, 8, 3)), np.array([0, 3]), class_names=json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match=r"lab.h5.*label 3 at index 1 is out of range \[0, 2\)"):
        build_dataset(f"h5:{lab}", "train", 4)
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        build_dataset(f"h5:{tmp_path}/nothere.h5", "train", 4)
    scan = make_scanobjectnn(tmp_path / "so")
    write_h5(scan / "h5_files/main_split/test_objectdataset.h5", np.zeros((2, 8, 3)), np.array([0, 15]))
    with pytest.raises(ValueError, match=r"test_objectdataset.h5.*label 15.*\[0, 15\)"):
        build_dataset(f"scanobjectnn:OBJ_BG:{scan}", "test", 4)
    few = make_fewshot(tmp_path / "fs")
    with open(few / "5way_2shot" / "1.pkl", "wb") as f:
        pickle.dump({"train": [(np.zeros((8, 6)), 7, 0)], "test": []}, f)
    with pytest.raises(ValueError, match=r"1.pkl.*label 7.*out of range \[0, 5\)"):
        build_dataset(f"fewshot:5:2:1:{few}", "train", 4)
    part = make_shapenetpart(tmp_path / "sp")
    victim = next((part / "03797390").glob("*.txt"))
    rows = np.loadtxt(victim)
    rows[0, 6] = 5
    np.savetxt(victim, rows)
    ds = build_dataset(f"shapenetpart:{part}", "train", 4)
    idx = ds.files.index(str(victim))
    with pytest.raises(ValueError, match=r"part label 5 is not a part of Mug"):
        ds[idx]


def test_source_strings_and_missing_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("ACT3D_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"unknown data source kind 'modelnet10'.*valid kinds.*'synthetic'"):
        build_dataset("modelnet10", "train", 4)
    with pytest.raises(FileNotFoundError, match=r"data/ModelNet40.*modelnet40_\{train,test\}_8192pts_fps.dat"):
        build_dataset("modelnet40", "train", 4)
    monkeypatch.setenv("ACT3D_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=r"elsewhere.*ScanObjectNN.*main_split"):
        build_dataset("scanobjectnn:OBJ_BG", "train", 4)
    with pytest.raises(ValueError, match="variant must be one of"):
        build_dataset("scanobjectnn:OBJ_XX", "train", 4)
    with pytest.raises(ValueError, match="fewshot:WAY:SHOT:FOLD"):
        build_dataset("fewshot:5:10", "train", 4)
    with pytest.raises(ValueError, match=r"split for 'modelnet40' must be one of \['train', 'test'\]"):
        build_dataset("modelnet40", "pretrain", 4)
    with pytest.raises(ValueError, match="sampling must be one of"):
        build_dataset("synthetic", "train", 4, sampling="grid")
    with pytest.raises(FileNotFoundError, match="no train.txt"):
        os.makedirs(tmp_path / "empty")
        build_dataset(f"shapenet:{tmp_path / 'empty'}", "train", 4)


def test_is_synthetic_names_the_generated_sources():
    from act3d.data import is_synthetic

    assert all(is_synthetic(s) for s in ("synthetic", "synthetic-scan", "synthetic-parts", "Synthetic"))
    assert not any(is_synthetic(s) for s in ("shapenet:/x", "modelnet40", "h5:/a.h5", "shapenetpart"))
    with pytest.raises(ValueError, match="unknown data source kind 'synthtic'"):
        is_synthetic("synthtic")
    # a generated source honours num_samples: the caps of probe/embed/fine-tuning apply
    assert len(build_dataset("synthetic-parts", "test", 64, num_samples=5)) == 5
