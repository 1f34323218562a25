"""Shape file readers (every format, written here byte by byte) and surface sampling."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from act3d.data.io import load_points, mesh_area, read_shape, sample_surface, subsample_points

# A unit cube as 8 vertices and 6 quads (area 6).
CUBE_V = np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
CUBE_Q = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])


def _tris(quads):
    return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


def write_ply_ascii(path, v, faces=None, extra_element=False):
    lines = ["ply", "format ascii 1.0", "comment made by a test", f"element vertex {len(v)}",
             "property float x", "property float y", "property float z", "property uchar red"]
    if faces is not None:
        lines += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    if extra_element:
        lines += ["element edge 1", "property int vertex1", "property int vertex2"]
    lines.append("end_header")
    lines += [f"{a} {b} {c} 255" for a, b, c in v]
    if faces is not None:
        lines += [" ".join(map(str, [len(f), *f])) for f in faces]
    if extra_element:
        lines.append("0 1")
    path.write_text("\n".join(lines) + "\n")


def write_ply_binary(path, v, faces=None, endian="<", ragged=None):
    fmt = "binary_little_endian" if endian == "<" else "binary_big_endian"
    head = ["ply", f"format {fmt} 1.0", f"element vertex {len(v)}", "property float x", "property float y",
            "property float z", "property double confidence"]
    polys = [] if faces is None else [list(f) for f in faces]
    if ragged is not None:
        polys = ragged
    if polys:
        head += [f"element face {len(polys)}", "property list uchar int vertex_indices", "property uchar flags"]
    body = b"".join(struct.pack(endian + "fffd", *p, 0.5) for p in v)
    for poly in polys:
        body += struct.pack(endian + "B" + "i" * len(poly) + "B", len(poly), *poly, 7)
    path.write_bytes(("\n".join(head) + "\nend_header\n").encode() + body)


def write_off(path, v, faces, one_line_header=False):
    head = f"OFF{len(v)} {len(faces)} 0\n" if one_line_header else f"OFF\n# comment\n{len(v)} {len(faces)} 0\n"
    body = "".join(f"{a} {b} {c}\n" for a, b, c in v)
    body += "".join(" ".join(map(str, [len(f), *f])) + "\n" for f in faces)
    path.write_text(head + body)


def write_obj(path, v, faces, negative=False):
    out = ["# obj", "o cube"] + [f"v {a} {b} {c}" for a, b, c in v] + ["vt 0 0", "vn 0 0 1"]
    for f in faces:
        idx = [i - len(v) if negative else i + 1 for i in f]
        out.append("f " + " ".join(f"{i}/1/1" for i in idx))
    path.write_text("\n".join(out) + "\n")


def write_stl_ascii(path, v, tris):
    out = ["solid test"]
    for t in tris:
        out += ["facet normal 0 0 0", "outer loop"] + [f"vertex {a:e} {b:e} {c:e}" for a, b, c in v[t]]
        out += ["endloop", "endfacet"]
    path.write_text("\n".join(out + ["endsolid test"]) + "\n")


def write_stl_binary(path, v, tris):
    body = b"".join(struct.pack("<12fH", 0, 0, 0, *v[t].reshape(-1), 0) for t in tris)
    path.write_bytes(b"solid-looking header".ljust(80, b" ") + struct.pack("<I", len(tris)) + body)


def _area_of(shape):
    return mesh_area(shape.vertices, shape.faces)


@pytest.mark.parametrize("kind", ["ply_ascii", "ply_le", "ply_be", "ply_ragged", "off", "off_oneline",
                                  "obj", "obj_negative", "stl_ascii", "stl_binary", "npz_mesh"])
def test_mesh_formats_read_the_cube(tmp_path, kind):
    tris = _tris(CUBE_Q)
    if kind == "ply_ascii":
        p = tmp_path / "c.ply"
        write_ply_ascii(p, CUBE_V, CUBE_Q, extra_element=True)
    elif kind in ("ply_le", "ply_be"):
        p = tmp_path / "c.ply"
        write_ply_binary(p, CUBE_V, CUBE_Q, endian="<" if kind == "ply_le" else ">")
    elif kind == "ply_ragged":  # mixed triangles and quads -> the record-by-record path
        p = tmp_path / "c.ply"
        ragged = [list(t) for t in tris[:6]] + [list(q) for q in CUBE_Q[3:]]
        write_ply_binary(p, CUBE_V, ragged=ragged)
    elif kind in ("off", "off_oneline"):
        p = tmp_path / "c.off"
        write_off(p, CUBE_V, CUBE_Q, one_line_header=kind == "off_oneline")
    elif kind in ("obj", "obj_negative"):
        p = tmp_path / "c.obj"
        write_obj(p, CUBE_V, CUBE_Q, negative=kind == "obj_negative")
    elif kind == "stl_ascii":
        p = tmp_path / "c.stl"
        write_stl_ascii(p, CUBE_V, tris)
    elif kind == "stl_binary":
        p = tmp_path / "c.STL"
        write_stl_binary(p, CUBE_V, tris)
    else:
        p = tmp_path / "c.npz"
        np.savez(p, vertices=CUBE_V, faces=tris)
    shape = read_shape(p)
    assert shape.is_mesh
    assert shape.faces.shape[1] == 3 and shape.faces.shape[0] == 12
    assert _area_of(shape) == pytest.approx(6.0, rel=1e-6)
    np.testing.assert_allclose(shape.vertices.min(axis=0), 0.0, atol=1e-7)
    np.testing.assert_allclose(shape.vertices.max(axis=0), 1.0, atol=1e-7)


@pytest.mark.parametrize("kind", ["npy", "npz", "xyz", "txt_comma", "ply_ascii", "ply_binary", "obj_points"])
def test_cloud_formats(tmp_path, kind):
    rng = np.random.default_rng(1)
    pts = rng.random((50, 3)).round(5)
    if kind == "npy":
        p = tmp_path / "a.npy"
        np.save(p, np.concatenate([pts, rng.random((50, 3))], axis=1).astype(np.float32))
    elif kind == "npz":
        p = tmp_path / "a.npz"
        np.savez(p, points=pts)
    elif kind == "xyz":
        p = tmp_path / "a.xyz"
        p.write_text("".join(f"{a} {b} {c} 1 2 3\n" for a, b, c in pts))
    elif kind == "txt_comma":
        p = tmp_path / "a.txt"
        p.write_text("".join(f"{a},{b},{c},0,0,1\n" for a, b, c in pts))
    elif kind == "ply_ascii":
        p = tmp_path / "a.ply"
        write_ply_ascii(p, pts)
    elif kind == "ply_binary":
        p = tmp_path / "a.ply"
        write_ply_binary(p, pts)
    else:
        p = tmp_path / "a.obj"
        p.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in pts))
    shape = read_shape(p)
    assert not shape.is_mesh
    np.testing.assert_allclose(shape.vertices, pts, rtol=1e-5, atol=1e-6)


def test_sample_surface_is_area_uniform_and_on_the_mesh():
    # two disjoint triangles with areas 0.5 and 4.5: expect a 1:9 split
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 5], [3, 0, 5], [0, 3, 5]], dtype=float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    pts = sample_surface(v, f, 20000, np.random.default_rng(0))
    small = pts[:, 2] == 0
    assert small.mean() == pytest.approx(0.1, abs=0.01)
    assert (pts[small, 0] + pts[small, 1] <= 1 + 1e-9).all() and (pts[:, :2] >= -1e-12).all()
    assert (pts[~small, 0] + pts[~small, 1] <= 3 + 1e-9).all()
    # uniform inside the triangle: mean of a uniform triangle sample is its centroid
    np.testing.assert_allclose(pts[~small, :2].mean(axis=0), [1.0, 1.0], atol=0.03)
    again = sample_surface(v, f, 20000, np.random.default_rng(0))
    np.testing.assert_array_equal(pts, again)


def test_load_points_counts_and_methods(tmp_path):
    p = tmp_path / "cube.off"
    write_off(p, CUBE_V, CUBE_Q)
    a = load_points(p, 256, seed=3)
    b = load_points(p, 256, seed=3)
    assert a.shape == (256, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    on_face = np.isclose(a, 0, atol=1e-6) | np.isclose(a, 1, atol=1e-6)
    assert on_face.any(axis=1).all(), "mesh samples must lie on the cube's faces"
    q = tmp_path / "cloud.npy"
    np.save(q, np.random.default_rng(0).random((100, 3)))
    assert load_points(q, 100, method="first").shape == (100, 3)
    with pytest.raises(ValueError, match=r"cloud.npy.*100 points, fewer than the 101"):
        load_points(q, 101)


def test_subsample_fps_matches_ops(tmp_path):
    import torch

    from act3d.ops import farthest_point_sample

    pts = np.random.default_rng(0).random((300, 3)).astype(np.float32)
    got = subsample_points(pts, 40, "fps")
    idx = farthest_point_sample(torch.from_numpy(pts)[None], 40)[0].numpy()
    np.testing.assert_array_equal(got, pts[idx])
    with pytest.raises(ValueError, match="method must be one of"):
        subsample_points(pts, 4, "grid")


def test_bad_inputs_name_the_file_and_problem(tmp_path):
    cases = {}
    p = tmp_path / "nan.xyz"
    p.write_text("0 0 0\nnan 1 2\n1 1 1\n")
    cases[p] = "NaN/inf"
    p = tmp_path / "empty.off"
    p.write_text("OFF\n0 0 0\n")
    cases[p] = "no points"
    p = tmp_path / "flat.off"  # all faces degenerate (collinear vertices)
    write_off(p, np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]], float), np.array([[0, 1, 2]]))
    cases[p] = "zero"
    p = tmp_path / "range.obj"
    write_obj(p, CUBE_V[:3], np.array([[0, 1, 5]]))
    cases[p] = "out of range"
    p = tmp_path / "short.ply"
    write_ply_binary(p, CUBE_V, CUBE_Q)
    p.write_bytes(p.read_bytes()[:-20])
    cases[p] = "ends early"
    p = tmp_path / "wrong.npy"
    np.save(p, np.zeros((10, 2)))
    cases[p] = r"\(N, >=3\)"
    p = tmp_path / "keys.npz"
    np.savez(p, a=np.zeros((3, 3)), b=np.zeros((3, 3)))
    cases[p] = "no point array found"
    p = tmp_path / "trunc.off"
    p.write_text("OFF\n8 6 0\n0 0 0\n")
    cases[p] = "declares 8 vertices"
    p = tmp_path / "noheader.off"
    p.write_text("hello\n")
    cases[p] = "not an OFF file"
    p = tmp_path / "junk.stl"
    p.write_bytes(b"\x01\x02garbage")
    cases[p] = "not an STL file"
    p = tmp_path / "thing.abc"
    p.write_text("1 2 3\n")
    cases[p] = "unsupported file type"
    for path, pattern in cases.items():
        with pytest.raises(ValueError, match=pattern) as info:
            read_shape(path)
        assert str(path) in str(info.value), info.value
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        read_shape(tmp_path / "missing.ply")
