"""`act3d data import` / `show` and the folder dataset on a mixed folder of meshes."""

from __future__ import annotations

import json
import os
import struct

import h5py
import numpy as np
import pytest

from act3d.cli import main
from act3d.data import build_dataset
from act3d.data.sampling import fps_indices

# a tetrahedron (area > 0) in several formats
TET_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _ply_binary(path, v, f):
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty float x\n"
            f"property float y\nproperty float z\nelement face {len(f)}\n"
            "property list uchar int vertex_indices\nend_header\n")
    body = b"".join(struct.pack("<fff", *p) for p in v)
    body += b"".join(struct.pack("<Biii", 3, *t) for t in f)
    path.write_bytes(head.encode() + body)


def _off(path, v, f):
    path.write_text(f"OFF\n{len(v)} {len(f)} 0\n" + "".join(f"{a} {b} {c}\n" for a, b, c in v)
                    + "".join(f"3 {a} {b} {c}\n" for a, b, c in f))


def _obj(path, v, f):
    quad = "f 1 2 3 4\n" if len(v) >= 4 else ""
    path.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v) + quad
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f))


def _stl_binary(path, v, f):
    body = b"".join(struct.pack("<12fH", 0, 0, 0, *v[t].reshape(-1), 0) for t in f)
    path.write_bytes(b"\0" * 80 + struct.pack("<I", len(f)) + body)


@pytest.fixture()
def mixed(tmp_path):
    root = tmp_path / "shapes"
    for d in ("chair", "table/nested", "lamp"):
        (root / d).mkdir(parents=True)
    _ply_binary(root / "chair" / "a.ply", TET_V * [1, 2, 1], TET_F)
    _off(root / "chair" / "b.off", TET_V + 5, TET_F)
    _obj(root / "table" / "c.obj", TET_V * 3, TET_F)
    _stl_binary(root / "table" / "nested" / "d.stl", TET_V[:, ::-1], TET_F)
    cloud = np.random.default_rng(0).random((700, 3)).astype(np.float32)
    np.save(root / "lamp" / "e.npy", cloud)
    (root / "lamp" / "broken.off").write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n")
    return root, cloud


def test_import_round_trip_with_skip_bad(mixed, tmp_path, capsys):
    root, cloud = mixed
    out = tmp_path / "out" / "mine.h5"
    rc = main(["data", "import", str(root), str(out), "--points", "256", "--labels-from-folders", "--skip-bad"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "wrote 5 shapes" in text and "3 classes" in text
    assert "broken.off" in text and "declares 4 vertices" in text
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (5, 256, 3) and f["data"].dtype == np.float32
        assert f["label"].dtype == np.int64
        assert json.loads(f.attrs["class_names"]) == ["chair", "lamp", "table"]
        assert [n.decode() for n in f["class_names"][()]] == ["chair", "lamp", "table"]
        files = [n.decode() for n in f["files"][()]]
        labels = f["label"][()].tolist()
        data = f["data"][()]
    assert dict(zip(files, labels)) == {
        os.path.join("chair", "a.ply"): 0, os.path.join("chair", "b.off"): 0,
        os.path.join("lamp", "e.npy"): 1, os.path.join("table", "c.obj"): 2,
        os.path.join("table", "nested", "d.stl"): 2,
    }
    assert np.isfinite(data).all()
    np.testing.assert_allclose(np.linalg.norm(data, axis=2).max(axis=1), 1.0, atol=1e-5)
    # the cloud went in by FPS, then unit-sphere normalisation
    sub = cloud[fps_indices(cloud, 256)].astype(np.float64)
    sub -= sub.mean(axis=0)
    sub /= np.linalg.norm(sub, axis=1).max()
    np.testing.assert_allclose(data[files.index(os.path.join("lamp", "e.npy"))], sub, atol=1e-5)
    ds = build_dataset(f"h5:{out}", "test", 128)
    assert ds.class_names == ["chair", "lamp", "table"] and len(ds) == 5
    assert ds[0]["points"].shape == (128, 3)
    # reproducible: a second import gives the same file contents
    out2 = tmp_path / "again.h5"
    assert main(["data", "import", str(root), str(out2), "--points", "256", "--labels-from-folders",
                 "--skip-bad"]) == 0
    with h5py.File(out2, "r") as f:
        np.testing.assert_array_equal(f["data"][()], data)


def test_import_fails_cleanly_without_skip_bad(mixed, tmp_path, capsys):
    root, _ = mixed
    out = tmp_path / "res" / "x.h5"
    rc = main(["data", "import", str(root), str(out), "--points", "64", "--labels-from-folders"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken.off" in err and "declares 4 vertices" in err
    assert not out.exists()
    assert os.listdir(out.parent) == [], "no temporary file may be left behind"


def test_import_unlabeled_and_loose_files(mixed, tmp_path, capsys):
    root, _ = mixed
    os.remove(root / "lamp" / "broken.off")
    np.save(root / "loose.npy", np.random.default_rng(1).random((300, 3)))
    out = tmp_path / "u.h5"
    assert main(["data", "import", str(root), str(out), "--points", "64"]) == 0
    ds = build_dataset(f"h5:{out}", "train", 64)
    assert len(ds) == 6 and ds.num_classes == 0 and set(ds.labels.tolist()) == {-1}
    out2 = tmp_path / "l.h5"
    assert main(["data", "import", str(root), str(out2), "--points", "64", "--labels-from-folders"]) == 2
    assert "loose.npy" in capsys.readouterr().err and not out2.exists()
    assert main(["data", "import", str(root), str(out2), "--points", "64", "--labels-from-folders",
                 "--skip-bad"]) == 0
    assert "not inside a class sub-folder" in capsys.readouterr().out
    # too few points in a cloud is bad input
    assert main(["data", "import", str(root), str(tmp_path / "big.h5"), "--points", "800"]) == 2
    assert "fewer than the 800" in capsys.readouterr().err


def test_folder_dataset_labels_and_split_layouts(mixed, tmp_path):
    root, _ = mixed
    os.remove(root / "lamp" / "broken.off")
    ds = build_dataset(f"folder:{root}", "train", 64)
    assert ds.class_names == ["chair", "lamp", "table"] and len(ds) == 5
    s = ds[3]
    assert s["points"].shape == (64, 3) and int(s["label"]) == ds.labels[3]
    # DIR/<class>/<split>/ (raw ModelNet layout) and DIR/<split>/<class>/
    raw = tmp_path / "raw"
    for cls in ("bed", "cup"):
        for split in ("train", "test"):
            (raw / cls / split).mkdir(parents=True)
            _off(raw / cls / split / f"{cls}_{split}.off", TET_V, TET_F)
    tr = build_dataset(f"folder:{raw}", "train", 32)
    assert tr.class_names == ["bed", "cup"] and [os.path.basename(f) for f in tr.files] == [
        "bed_train.off", "cup_train.off"]
    flipped = tmp_path / "flipped"
    (flipped / "test" / "x").mkdir(parents=True)
    _off(flipped / "test" / "x" / "t.off", TET_V, TET_F)
    te = build_dataset(f"folder:{flipped}", "test", 32)
    assert te.class_names == ["x"] and len(te) == 1


def test_show_writes_a_png_with_the_shapes(mixed, tmp_path, capsys):
    import matplotlib.image as mpimg

    root, _ = mixed
    out = tmp_path / "imp.h5"
    assert main(["data", "import", str(root), str(out), "--points", "128", "--labels-from-folders",
                 "--skip-bad"]) == 0
    png = tmp_path / "pics" / "grid.png"
    assert main(["data", "show", f"h5:{out}", "--out", str(png), "--n", "4", "--points", "128"]) == 0
    assert "wrote 4 samples" in capsys.readouterr().out
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    ink = (img[..., :3] < 0.8).any(axis=-1).mean()
    assert ink > 0.005, "the picture must contain drawn points"
    syn = tmp_path / "syn.png"
    assert main(["data", "show", "synthetic", "--out", str(syn), "--n", "3", "--points", "128"]) == 0
    assert syn.stat().st_size > 5000
    assert main(["data", "show", "nope:1", "--out", str(syn)]) == 2
    assert "unknown data source kind" in capsys.readouterr().err


def test_render_clouds_colours_points_by_label(tmp_path):
    import matplotlib.image as mpimg
    import numpy as np
    import pytest

    from act3d.viz import CATEGORY_COLOURS, render_clouds

    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(400, 3))

    def share_near(png, colour):
        img = mpimg.imread(png)[..., :3]
        return (np.abs(img - np.asarray(colour)).max(axis=-1) < 0.12).mean()

    for label in (0, 1):
        png = render_clouds([cloud], ["x"], tmp_path / f"l{label}.png", labels=[np.full(400, label)], point_size=8)
        own, other = share_near(png, CATEGORY_COLOURS[label]), share_near(png, CATEGORY_COLOURS[1 - label])
        assert own > 0.002 and other < own / 20, (label, own, other)
    with pytest.raises(ValueError, match="label arrays for 1 clouds"):
        render_clouds([cloud], None, tmp_path / "bad.png", labels=[])
    with pytest.raises(ValueError, match=r"labels\[0\] must be 400"):
        render_clouds([cloud], None, tmp_path / "bad.png", labels=[np.zeros(3)])


def test_show_colours_part_labelled_sources_by_part(tmp_path, capsys):
    png = tmp_path / "parts.png"
    assert main(["data", "show", "synthetic-parts", "--out", str(png), "--n", "2", "--points", "128"]) == 0
    assert "wrote 2 samples of synthetic-parts" in capsys.readouterr().out and png.stat().st_size > 5000
