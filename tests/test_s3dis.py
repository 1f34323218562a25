"""Scene segmentation: S3DIS loaders (raw and npy layouts), columns, whole-room evaluation,
synthetic rooms, and the ``act3d segment`` commands.

Fixtures are written by the tests into ``tmp_path`` in the exact on-disk layouts:
``Stanford3dDataset_v1.2_Aligned_Version/Area_<a>/<room>/Annotations/<class>_<i>.txt`` and
``Area_<a>_<room>.npy`` (N x 7).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from act3d.cli import main
from act3d.data.rooms import generate_room, synthetic_rooms
from act3d.data.s3dis import (
    RAW_DIRNAME,
    S3DIS_CLASSES,
    RandomColumns,
    class_from_annotation,
    column_chunks,
    find_rooms,
    label_histogram,
    label_weights,
    load_npy_room,
    load_room,
    load_s3dis,
    read_annotation_file,
    room_columns,
)
from act3d.models.encoder_api import save_encoder
from act3d.models.student import EncoderConfig, PointEncoder
from act3d.train.segment import load_segmenter, predict_room

C = {name: i for i, name in enumerate(S3DIS_CLASSES)}

# Test-sized settings for the commands: 128-point columns in 8 patches of 16, a narrow head.
TINY = [
    "data.num_points=128", "data.min_points=64", "data.train_samples=8", "data.val_samples=4",
    "data.synthetic_train_rooms=2", "data.synthetic_test_rooms=1", "data.synthetic_density=40", "data.eval_stride=1.0",
    "model.encoder=tiny", "model.num_groups=8", "model.group_size=16",
    "model.propagation_dims=[32, 32]", "model.head_dims=[32, 16]",
    "optim.epochs=1", "optim.warmup_epochs=0", "optim.batch_size=4", "eval_batch_size=32",
    "runtime.device=cpu", "runtime.threads=1",
    "run.progress=off", "run.tensorboard=false", "run.plots=false",
]  # fmt: skip


def _objects(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """A small box room (2.4 x 2 x 2.5 m) as annotation objects: name -> (M, 6) x y z r g b."""
    rng = np.random.default_rng(seed)

    def plane(n, lo, hi):
        return rng.uniform(lo, hi, size=(n, 3))

    w, d, h = 2.4, 2.0, 2.5
    objs = {
        "floor_1": plane(int(900 * scale), (0, 0, 0), (w, d, 0)),
        "ceiling_1": plane(int(900 * scale), (0, 0, h), (w, d, h)),
        "wall_1": plane(int(500 * scale), (0, 0, 0), (w, 0, h)),
        "wall_2": plane(int(500 * scale), (0, d, 0), (w, d, h)),
        "door_1": plane(int(120 * scale), (0, 0.5, 0), (0, 1.4, 2.0)),
        "chair_1": plane(int(150 * scale), (0.5, 0.5, 0), (0.9, 0.9, 0.9)),
        "chair_2": plane(int(150 * scale), (1.5, 0.6, 0), (1.9, 1.0, 0.9)),
        "stairs_1": plane(int(80 * scale), (2.0, 1.5, 0), (2.3, 1.9, 0.6)),
    }
    out = {}
    for name, xyz in objs.items():
        rgb = rng.integers(0, 256, size=(len(xyz), 3)).astype(np.float64)
        out[name] = np.concatenate([np.round(xyz + np.array([10.0, -3.0, 1.5]), 6), rgb], axis=1)
    return out


def _expected_label(name: str) -> int:
    base = name.rsplit("_", 1)[0]
    return C.get(base, C["clutter"])


def _write_raw(root, rooms: dict[tuple[int, str], dict[str, np.ndarray]]):
    base = root / RAW_DIRNAME
    for (area, room), objs in rooms.items():
        ann = base / f"Area_{area}" / room / "Annotations"
        ann.mkdir(parents=True)
        everything = []
        for name, arr in objs.items():
            lines = [f"{x:.6f} {y:.6f} {z:.6f} {int(r)} {int(g)} {int(b)}" for x, y, z, r, g, b in arr]
            (ann / f"{name}.txt").write_text("\n".join(lines) + "\n")
            everything += lines
        (ann.parent / f"{room}.txt").write_text("\n".join(everything) + "\n")  # the whole room: ignored
        (base / f"Area_{area}" / ".DS_Store").write_text("junk")  # stray files are skipped
    return base


def _as_npy_array(objs: dict[str, np.ndarray]) -> np.ndarray:
    rows = [
        np.concatenate([arr, np.full((len(arr), 1), _expected_label(name))], axis=1)
        for name, arr in sorted(objs.items())
    ]
    return np.concatenate(rows).astype(np.float32)


# ----------------------------------------------------------------------------- loaders


def test_class_from_annotation_maps_names_and_unknowns_to_clutter():
    assert S3DIS_CLASSES[class_from_annotation("chair_12.txt")] == "chair"
    assert S3DIS_CLASSES[class_from_annotation("bookcase_1.txt")] == "bookcase"
    assert S3DIS_CLASSES[class_from_annotation("stairs_1.txt")] == "clutter"
    assert S3DIS_CLASSES[class_from_annotation("clutter_3.txt")] == "clutter"
    assert len(S3DIS_CLASSES) == 13


def test_raw_layout_parses_rooms_labels_and_caches(tmp_path, monkeypatch):
    objs = _objects(0)
    _write_raw(tmp_path / "data", {(1, "office_1"): objs, (5, "hallway_2"): _objects(1)})
    cache = tmp_path / "cache"
    for root in (tmp_path / "data", tmp_path / "data" / RAW_DIRNAME):  # parent or the raw folder itself
        refs = find_rooms(root, [1])
        assert [(r.area, r.name, r.layout) for r in refs] == [(1, "Area_1_office_1", "raw")]
    (room,) = load_s3dis(tmp_path / "data", [1], cache_dir=cache)
    assert room.name == "Area_1_office_1"
    assert len(room) == sum(len(a) for a in objs.values())
    counts = np.bincount(room.labels, minlength=13)
    for cls, expected in (("floor", 900), ("chair", 300), ("door", 120), ("clutter", 80), ("wall", 1000)):
        assert counts[C[cls]] == expected, cls
    chair = np.concatenate([objs["chair_1"], objs["chair_2"]])
    got = room.points[room.labels == C["chair"]]
    np.testing.assert_allclose(np.sort(got[:, 0]), np.sort(chair[:, 0]), atol=1e-5)
    assert room.colors.dtype == np.uint8
    cached = list(cache.glob("Area_1_office_1.*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (len(room), 7)
    # The second load comes from the cache: the text parser must not run.
    import act3d.data.s3dis as s3dis

    monkeypatch.setattr(s3dis, "parse_raw_room", lambda *a, **k: pytest.fail("raw room parsed again"))
    again = load_room(find_rooms(tmp_path / "data", [1])[0], cache)
    np.testing.assert_array_equal(again.points, room.points)
    np.testing.assert_array_equal(again.labels, room.labels)
    # A changed annotation file invalidates the cache entry.
    monkeypatch.undo()
    chair_file = tmp_path / "data" / RAW_DIRNAME / "Area_1" / "office_1" / "Annotations" / "chair_1.txt"
    with chair_file.open("a") as fh:
        fh.write("10.5 -2.5 1.6 1 2 3\n")
    changed = load_room(find_rooms(tmp_path / "data", [1])[0], cache)
    assert len(changed) == len(room) + 1


def test_raw_layout_errors_name_the_file(tmp_path):
    bad = tmp_path / "table_1.txt"
    bad.write_text("1 2 3 4 5 6\n1 2 3 4 5\n")
    with pytest.raises(ValueError, match="table_1.txt"):
        read_annotation_file(bad)
    words = tmp_path / "board_1.txt"
    words.write_text("1 2 3 4 5 six\n")
    with pytest.raises(ValueError, match="board_1.txt"):
        read_annotation_file(words)
    # the public release's stray control character is tolerated
    ctrl = tmp_path / "ceiling_1.txt"
    ctrl.write_bytes(b"1 2 3 4 5 6\n7 8 9 10 11 12\x10\n")
    np.testing.assert_array_equal(read_annotation_file(ctrl)[1], [7, 8, 9, 10, 11, 12])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no S3DIS rooms"):
        find_rooms(tmp_path / "empty", [1])


def test_npy_layout_matches_raw_layout(tmp_path):
    objs = _objects(2)
    _write_raw(tmp_path / "raw", {(2, "WC_1"): objs})
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    np.save(npy_dir / "Area_2_WC_1.npy", _as_npy_array(objs))
    np.save(npy_dir / "Area_5_office_3.npy", _as_npy_array(_objects(3)))
    refs = find_rooms(npy_dir, [2, 5])
    assert [(r.name, r.layout) for r in refs] == [("Area_2_WC_1", "npy"), ("Area_5_office_3", "npy")]
    (from_npy,) = load_s3dis(npy_dir, [2])
    (from_raw,) = load_s3dis(tmp_path / "raw", [2], cache_dir=tmp_path / "cache")
    assert len(from_npy) == len(from_raw)
    key = lambda r: np.lexsort((r.points[:, 2], r.points[:, 1], r.points[:, 0]))  # noqa: E731
    a, b = key(from_npy), key(from_raw)
    np.testing.assert_allclose(from_npy.points[a], from_raw.points[b], atol=1e-5)
    np.testing.assert_array_equal(from_npy.labels[a], from_raw.labels[b])
    np.testing.assert_array_equal(from_npy.colors[a], from_raw.colors[b])
    with pytest.raises(ValueError, match=r"area\(s\) \[3\]; areas found: \[2, 5\]"):
        find_rooms(npy_dir, [3])


def test_npy_layout_rejects_bad_files(tmp_path):
    six = tmp_path / "Area_1_bad_1.npy"
    np.save(six, np.zeros((10, 6), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Area_1_bad_1.npy.*\(N, 7\)"):
        load_npy_room(six)
    arr = _as_npy_array(_objects(4, scale=0.1))
    arr[3, 6] = 13
    bad_label = tmp_path / "Area_1_bad_2.npy"
    np.save(bad_label, arr)
    with pytest.raises(ValueError, match=r"Area_1_bad_2.npy.*row 3"):
        load_npy_room(bad_label)


def test_label_weights_are_the_cube_root_of_inverse_frequency():
    counts = np.array([800, 100, 0, 8] + [0] * 9)
    w = label_weights(counts)
    np.testing.assert_allclose(w[:4], [1.0, 2.0, 0.0, 100.0 ** (1 / 3)], rtol=1e-6)
    np.testing.assert_array_equal(label_weights(counts, power=0.0)[[0, 1, 3]], [1, 1, 1])
    with pytest.raises(ValueError):
        label_weights(np.zeros(13))


# ----------------------------------------------------------------------------- columns


def _npy_room(seed: int = 0, scale: float = 1.0):
    arr = _as_npy_array(_objects(seed, scale))
    from act3d.data.s3dis import Room

    return Room.from_array(arr, f"fixture_{seed}")


def test_random_columns_sample_spec():
    room = _npy_room(0)
    ds = RandomColumns([room], num_points=128, min_points=200, num_samples=6, train=False, seed=3)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["points"].shape == (128, 3) and item["points"].dtype == torch.float32
        assert item["seg"].shape == (128,) and item["seg"].dtype == torch.int64
        pts = item["points"].numpy()
        assert np.abs(pts[:, :2]).max() <= 0.5 + 1e-5  # xy centred on the 1 m column
        assert pts[:, 2].min() >= -1e-5 and pts[:, 2].max() <= 2.5 + 1e-4  # z from the room's floor
        inputs, labels, idx = ds.draw(i, np.random.default_rng([3, 0x5C3E, i]))
        np.testing.assert_array_equal(inputs, pts)
        assert len(np.unique(idx)) == 128  # enough points: drawn without replacement
        # the column (recomputed from the room) holds at least min_points points
        xyz = ds._xyz[0]
        center = xyz[idx, :2].mean(axis=0) - inputs[:, :2].mean(axis=0)
        inside = (np.abs(xyz[:, :2] - center) <= 0.5 + 1e-6).all(axis=1)
        assert inside.sum() >= 200
        np.testing.assert_array_equal(labels, ds._labels[0][idx])
    np.testing.assert_array_equal(ds[2]["points"], ds[2]["points"])  # fixed per item in test mode
    train = RandomColumns([room], num_points=256, min_points=200, num_samples=4, train=True)
    torch.manual_seed(0)
    a = train[1]["points"]
    torch.manual_seed(0)
    np.testing.assert_array_equal(a, train[1]["points"])  # training draws follow torch's seed
    assert not torch.equal(a, train[1]["points"])
    as_is = RandomColumns([room], num_points=64, min_points=10, num_samples=2, z_origin="as_is", train=False)
    assert as_is[0]["points"][:, 2].min() >= 1.5 - 1e-4
    with pytest.raises(ValueError, match="z_origin"):
        RandomColumns([room], z_origin="floor")


def test_rooms_are_drawn_in_proportion_to_their_points():
    big, small = _npy_room(0, scale=1.0), _npy_room(1, scale=0.25)
    ds = RandomColumns([big, small], num_points=64, min_points=10, num_samples=100, train=False)
    share = np.mean([ds.room_of(i) == 0 for i in range(len(ds))])
    assert abs(share - len(big) / (len(big) + len(small))) < 0.02


def test_room_columns_cover_every_point_and_chunks_cover_each_once():
    room = _npy_room(5)
    columns = room_columns(room.points, block_size=1.0, stride=0.5)
    covered = np.zeros(len(room), dtype=int)
    for center, idx in columns:
        covered[idx] += 1
        assert (np.abs(room.points[idx, :2] - center) <= 0.5 + 1e-3).all()
    assert covered.min() >= 1  # every point in at least one column
    rng = np.random.default_rng(0)
    for _, idx in columns:
        chunks = column_chunks(idx, 300, rng)
        assert len(chunks) == -(-len(idx) // 300)
        valid = np.concatenate([c[v] for c, v in chunks])
        assert all(c.shape == (300,) and v.shape == (300,) for c, v in chunks)
        np.testing.assert_array_equal(np.sort(valid), idx)  # each point in exactly one chunk
        assert np.isin(np.concatenate([c for c, _ in chunks]), idx).all()  # padding repeats column points
    with pytest.raises(ValueError, match="stride"):
        room_columns(room.points, block_size=1.0, stride=1.5)


class _RuleModel(nn.Module):
    """Per-point logits from the input's own coordinates: class = f(z, x), so the right label
    of every point is known and a point that got another point's prediction shows."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    @staticmethod
    def rule(z: np.ndarray) -> np.ndarray:
        return np.where(z < 0.05, C["floor"], np.where(z > 2.45, C["ceiling"], C["wall"]))

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # (B, N, 3) -> (B, N, 13)
        z = points[..., 2]
        cls = torch.full_like(z, C["wall"], dtype=torch.long)
        cls[z < 0.05] = C["floor"]
        cls[z > 2.45] = C["ceiling"]
        return 10 * torch.nn.functional.one_hot(cls, 13).float() + self.dummy


def test_whole_room_evaluation_labels_every_point_exactly_once():
    room = _npy_room(7)
    model = _RuleModel()
    pred = predict_room(model, room.points, num_classes=13, num_points=256, block_size=1.0, stride=0.5, batch_size=5)
    assert pred.labels.shape == (len(room),) and pred.probs.shape == (len(room), 13)
    z = room.points[:, 2] - room.points[:, 2].min()
    np.testing.assert_array_equal(pred.labels, _RuleModel.rule(z))  # each point got its own prediction
    # votes = number of columns holding the point (brute force), each column voting once
    expected = np.zeros(len(room), dtype=int)
    for _, idx in room_columns(room.points, 1.0, 0.5):
        expected[idx] += 1
    np.testing.assert_array_equal(pred.votes, expected)
    assert pred.votes.min() >= 1
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.training  # the model's mode is restored


# ----------------------------------------------------------------------------- synthetic rooms


def test_synthetic_rooms_are_deterministic_metric_and_cover_the_classes():
    a, b = generate_room(1, "train", density=150), generate_room(1, "train", density=150)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(generate_room(1, "test", density=150).points[:100], a.points[:100])
    rooms = synthetic_rooms("train", 6, density=150)
    present = set()
    for room in rooms:
        present |= set(np.unique(room.labels).tolist())
        extent = np.ptp(room.points, axis=0)
        assert 3.4 < extent[0] < 6.8 and 3.4 < extent[1] < 6.8 and 2.5 < extent[2] < 3.4  # metres
        floor = room.points[room.labels == C["floor"]]
        density = len(floor) / (np.ptp(floor[:, 0]) * np.ptp(floor[:, 1]))
        assert 120 < density < 180  # points per m² as asked
    assert present == set(range(13)), sorted(set(range(13)) - present)
    hist = label_histogram(rooms)
    assert hist.sum() == sum(len(r) for r in rooms)


# ----------------------------------------------------------------------------- commands


def test_segment_train_and_eval_cli_on_synthetic_rooms(tmp_path, capsys):
    enc = PointEncoder(EncoderConfig.tiny(num_groups=8, group_size=16))
    student = save_encoder(enc, tmp_path / "student.safetensors")
    sets = [a for kv in TINY for a in ("--set", kv)]
    rc = main(["segment", "train", "--data", "synthetic-rooms", "--init", str(student), "--config", "tiny",
               *sets, "--set", f"run.out_dir={tmp_path / 'runs'}"])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["backbone_keys_loaded"] == len(enc.state_dict())
    assert set(result["evaluations"]) == {"whole-room", "random-columns"}
    whole = result["evaluations"]["whole-room"]
    test_room = generate_room(0, "test", density=40)
    assert whole["points"] == len(test_room) and whole["rooms"] == 1
    assert 0.0 <= whole["miou"] <= 1.0 and len(whole["iou"]) == 13
    assert (run / "room.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "random-columns" in out and "NOT whole rooms" in out
    seg = load_segmenter(run)
    assert seg.init == str(student) and seg.data.num_points == 128
    for key, value in enc.state_dict().items():  # the backbone really started from the student
        assert seg.model.backbone.state_dict()[key].shape == value.shape
    rc = main(["segment", "eval", str(run / "segmenter.safetensors"), "--protocol", "whole-room",
               "--picture", "none", "--out", str(tmp_path / "ev")])
    assert rc == 0
    again = json.loads((tmp_path / "ev" / "result.json").read_text())["evaluations"]["whole-room"]
    assert not (tmp_path / "ev" / "room.png").exists()
    assert again["confusion"] == whole["confusion"]  # deterministic whole-room evaluation


def test_segment_train_on_s3dis_fixture_and_bad_options(tmp_path, capsys):
    npy_dir = tmp_path / "s3dis"
    npy_dir.mkdir()
    for area, seed in ((1, 10), (2, 11), (5, 12)):
        np.save(npy_dir / f"Area_{area}_office_{seed}.npy", _as_npy_array(_objects(seed, scale=0.3)))
    sets = [a for kv in TINY for a in ("--set", kv)]
    rc = main(["segment", "train", "--data", f"s3dis:{npy_dir}", "--init", "scratch", "--config", "tiny", *sets,
               "--set", "data.train_areas=[1, 2]", "--set", "data.test_areas=[5]", "--set", "final_eval=whole-room",
               "--set", f"run.out_dir={tmp_path / 'runs'}"])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["test_rooms"] == ["Area_5_office_12"] and result["train_rooms"] == 2
    assert result["evaluations"]["whole-room"]["points"] == len(load_npy_room(npy_dir / "Area_5_office_12.npy"))
    w = np.array(result["class_weights"])
    assert w[C["wall"]] == pytest.approx(1.0) and w[C["beam"]] == 0.0 and w[C["chair"]] > 1.0
    capsys.readouterr()
    assert main(["segment", "train", "--data", "nowhere", "--config", "tiny"]) == 2
    assert "valid choices" in capsys.readouterr().err
    assert main(["segment", "train", "--config", "tiny", "--set", "data.train_areas=[5]"]) == 2
    assert "overlap" in capsys.readouterr().err
