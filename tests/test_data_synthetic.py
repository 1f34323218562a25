"""The procedural shape world: determinism, classes, variation, scan mode, datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from act3d.data import build_dataset
from act3d.data.synthetic import CLASSES, SyntheticShapes, generate_shape, generate_shapes, shape_triangles


def _extent(points):
    return points.max(axis=0) - points.min(axis=0)


def test_at_least_twelve_part_based_classes():
    assert len(CLASSES) >= 12 and len(set(CLASSES)) == len(CLASSES)
    for label in range(len(CLASSES)):
        tris = shape_triangles(label, np.random.default_rng(label))
        assert tris.ndim == 3 and tris.shape[1:] == (3, 3) and np.isfinite(tris).all()
        assert len(tris) >= 24, f"{CLASSES[label]} should be made of several parts"


def test_shapes_are_normalised_and_deterministic():
    pts, labels = generate_shapes(len(CLASSES), 256, split="train", seed=1)
    again, labels2 = generate_shapes(len(CLASSES), 256, split="train", seed=1)
    np.testing.assert_array_equal(pts, again)
    assert labels.tolist() == list(range(len(CLASSES))) and labels.tolist() == labels2.tolist()
    assert pts.dtype == np.float32 and pts.shape == (len(CLASSES), 256, 3)
    np.testing.assert_allclose(pts.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=2).max(axis=1), 1.0, atol=1e-5)
    other, _ = generate_shapes(3, 256, split="train", seed=2)
    assert not np.allclose(other, pts[:3])


def test_splits_use_distinct_streams():
    a, _ = generate_shapes(2, 128, split="train")
    b, _ = generate_shapes(2, 128, split="test")
    c, _ = generate_shapes(2, 128, split="pretrain")
    assert not np.allclose(a, b) and not np.allclose(a, c)


def test_within_class_variation_and_class_shape_cues():
    chair, table, lamp = CLASSES.index("chair"), CLASSES.index("table"), CLASSES.index("lamp")
    chairs = [generate_shape(chair, 512, np.random.default_rng(s)) for s in range(6)]
    ext = np.array([_extent(c) for c in chairs])
    assert ext.std(axis=0).max() > 0.05, "chairs must vary in proportions"
    # simple geometric cues: lamps are tall and thin; tables are wider than tall
    lamps = [_extent(generate_shape(lamp, 512, np.random.default_rng(s))) for s in range(4)]
    tables = [_extent(generate_shape(table, 512, np.random.default_rng(s))) for s in range(4)]
    assert all(e[1] > 0.8 * max(e[0], e[2]) for e in lamps)
    assert all(max(e[0], e[2]) > e[1] for e in tables)


def test_scan_mode_is_partial_noisy_and_deterministic():
    label = CLASSES.index("sofa")
    clean = generate_shape(label, 512, np.random.default_rng(0))
    scan = generate_shape(label, 512, np.random.default_rng(0), scan=True)
    scan2 = generate_shape(label, 512, np.random.default_rng(0), scan=True)
    np.testing.assert_array_equal(scan, scan2)
    assert scan.shape == (512, 3) and np.isfinite(scan).all()
    np.testing.assert_allclose(np.linalg.norm(scan - scan.mean(axis=0), axis=1).max(), 1.0, atol=1e-5)
    # a floor patch: many points in the lowest slab (clean shapes have legs there, not a plane)
    low = scan[:, 1] < scan[:, 1].min() + 0.05
    assert low.mean() > 0.05
    assert not np.allclose(np.sort(clean[:, 1]), np.sort(scan[:, 1]), atol=0.05)


def test_dataset_items_labels_and_lengths():
    ds = SyntheticShapes("train", 128, num_samples=2 * len(CLASSES), seed=0)
    assert len(ds) == 2 * len(CLASSES) and ds.num_classes == len(CLASSES) and ds.class_names == list(CLASSES)
    assert np.bincount(ds.labels).tolist() == [2] * len(CLASSES)
    s = ds[3]
    assert s["points"].shape == (128, 3) and s["points"].dtype == torch.float32
    assert int(s["label"]) == 3
    pool = SyntheticShapes("pretrain", 64, num_samples=5)
    assert pool.num_classes == 0 and int(pool[0]["label"]) == -1
    assert 0 <= pool.class_of(0) < len(CLASSES)
    test = build_dataset("synthetic-scan", "test", 64, num_samples=3, seed=4)
    torch.testing.assert_close(test[1]["points"], test[1]["points"])
    assert test.scan
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticShapes("val", 64)
    with pytest.raises(ValueError, match="num_samples applies to synthetic"):
        build_dataset("h5:x.h5", "train", 64, num_samples=3)
