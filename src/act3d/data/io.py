"""Readers for point-cloud and mesh files, and uniform surface sampling.

Supported: ``.npy``, ``.npz``, ``.xyz``/``.txt``/``.pts`` (text columns x y z ...), ``.ply``
(ascii, binary little/big endian; vertex-only clouds or meshes with faces), ``.off``
(also COFF/NOFF and the ``OFF<V> <F> <E>`` one-line header found in ModelNet), ``.obj``
(``v``/``f``; polygons fan-triangulated) and ``.stl`` (ascii and binary).

:func:`read_shape` returns a :class:`Shape` (vertices plus optional triangle faces);
:func:`shape_to_points` turns it into exactly ``n`` points (meshes: area-uniform surface
samples; clouds: FPS or random subset); :func:`load_points` does both.  Every reader
validates what it read and raises ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Shape",
    "SHAPE_EXTENSIONS",
    "MESH_EXTENSIONS",
    "CLOUD_EXTENSIONS",
    "read_shape",
    "sample_surface",
    "mesh_area",
    "shape_to_points",
    "load_points",
    "subsample_points",
]

CLOUD_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".xyz", ".txt", ".pts")
MESH_EXTENSIONS: tuple[str, ...] = (".ply", ".off", ".obj", ".stl")
SHAPE_EXTENSIONS: tuple[str, ...] = CLOUD_EXTENSIONS + MESH_EXTENSIONS


@dataclass(frozen=True)
class Shape:
    """A shape read from disk.

    Attributes:
        vertices: (V, 3) float64 vertex / point positions.
        faces: (F, 3) int64 triangle vertex indices, or ``None`` for a point cloud.
        source: the file it came from (for error messages).
    """

    vertices: np.ndarray
    faces: np.ndarray | None
    source: str = "<memory>"

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None


# ----------------------------------------------------------------------------- checks


def _finish(path: str, vertices: np.ndarray, faces: np.ndarray | None) -> Shape:
    """Validate vertices/faces read from ``path`` and build a :class:`Shape`."""
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{path}: expected (V, 3) vertices, got shape {vertices.shape}")
    if vertices.shape[0] == 0:
        raise ValueError(f"{path}: contains no points/vertices")
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{path}: {int(bad.sum())} point(s) with NaN/inf coordinates "
            f"(first at index {int(np.argmax(bad))})"
        )
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        if faces.shape[0] == 0:
            faces = None
        else:
            lo, hi = int(faces.min()), int(faces.max())
            if lo < 0 or hi >= vertices.shape[0]:
                raise ValueError(
                    f"{path}: face vertex index out of range [{lo}, {hi}] for "
                    f"{vertices.shape[0]} vertices"
                )
            if mesh_area(vertices, faces) <= 0.0:
                raise ValueError(f"{path}: degenerate mesh, total surface area is zero")
    return Shape(vertices=vertices, faces=faces, source=path)


def _fan(polygons: list[list[int]], path: str) -> np.ndarray:
    """Fan-triangulate polygons (lists of vertex indices) -> (F, 3) int64."""
    tris: list[tuple[int, int, int]] = []
    for poly in polygons:
        if len(poly) < 3:
            raise ValueError(f"{path}: face with {len(poly)} vertices (need at least 3)")
        for j in range(1, len(poly) - 1):
            tris.append((poly[0], poly[j], poly[j + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _uniform_polygons(counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Triangulate polygons that all have ``k = counts[0]`` vertices (vectorised).

    rows: (F, >=k) vertex indices per polygon -> (F*(k-2), 3).
    """
    k = int(counts[0])
    idx = rows[:, :k].astype(np.int64)
    parts = [np.stack([idx[:, 0], idx[:, j], idx[:, j + 1]], axis=1) for j in range(1, k - 1)]
    return np.stack(parts, axis=1).reshape(-1, 3)


# ----------------------------------------------------------------------------- npy / npz / text


def _read_numpy_array(path: str, arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{path}: {what} has non-numeric dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"{path}: {what} must have shape (N, >=3) (xyz first), got {arr.shape}")
    return arr[:, :3]


def _read_npy(path: str) -> Shape:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a plain numpy array file ({err})") from err
    return _finish(path, _read_numpy_array(path, arr, "array"), None)


_NPZ_POINT_KEYS = ("points", "xyz", "pos", "vertices", "data")


def _read_npz(path: str) -> Shape:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:
        raise ValueError(f"{path}: not a plain numpy .npz archive ({err})") from err
    key = next((k for k in _NPZ_POINT_KEYS if k in arrays), None)
    if key is None:
        if len(arrays) != 1:
            raise ValueError(
                f"{path}: no point array found; expected one of keys {list(_NPZ_POINT_KEYS)} "
                f"(or a single array), found {sorted(arrays)}"
            )
        key = next(iter(arrays))
    pts = _read_numpy_array(path, arrays[key], f"array '{key}'")
    faces = arrays.get("faces")
    if faces is not None:
        if faces.dtype.kind not in "iu" or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"{path}: 'faces' must be (F, 3) integers, got {faces.shape} {faces.dtype}")
    return _finish(path, pts, faces)


def _read_text_columns(path: str) -> Shape:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("#", "//"))]
    if not lines:
        raise ValueError(f"{path}: contains no points")
    rows = [ln.replace(",", " ").split() for ln in lines]
    if len(rows[0]) == 1 and len(rows) > 1:
        rows = rows[1:]  # a point-count header line
    width = min(len(r) for r in rows)
    if width < 3:
        bad = next(i for i, r in enumerate(rows) if len(r) < 3)
        raise ValueError(f"{path}: line {bad + 1} has fewer than 3 columns (x y z)")
    try:
        pts = np.array([r[:3] for r in rows], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric coordinate ({err})") from err
    return _finish(path, pts, None)


# ----------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


@dataclass
class _PlyElement:
    name: str
    count: int
    props: list[tuple]  # (name, type) or (name, "list", count_type, item_type)

    @property
    def has_list(self) -> bool:
        return any(p[1] == "list" for p in self.props)


def _ply_type(path: str, t: str) -> str:
    if t not in _PLY_TYPES:
        raise ValueError(f"{path}: unknown PLY property type '{t}'")
    return _PLY_TYPES[t]


def _parse_ply_header(path: str, data: bytes) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic)")
    m = re.search(rb"end_header[ \t]*\r?\n", data)
    if m is None:
        raise ValueError(f"{path}: PLY header has no 'end_header'")
    header = data[: m.start()].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[_PlyElement] = []
    for line in header[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1] if len(tok) > 1 else ""
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise ValueError(f"{path}: bad PLY element line '{line}'")
            elements.append(_PlyElement(tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element")
            if len(tok) == 5 and tok[1] == "list":
                elements[-1].props.append(
                    (tok[4], "list", _ply_type(path, tok[2]), _ply_type(path, tok[3]))
                )
            elif len(tok) == 3:
                elements[-1].props.append((tok[2], _ply_type(path, tok[1])))
            else:
                raise ValueError(f"{path}: bad PLY property line '{line}'")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, m.end()


def _ply_ascii(path: str, elements: list[_PlyElement], body: bytes) -> dict[str, dict]:
    lines = body.decode("ascii", errors="replace").split("\n")
    pos = 0
    out: dict[str, dict] = {}
    for el in elements:
        chunk = [ln.split() for ln in lines[pos : pos + el.count]]
        pos += el.count
        if len(chunk) < el.count or (chunk and not chunk[-1]):
            raise ValueError(f"{path}: PLY body ends early in element '{el.name}'")
        cols: dict[str, object] = {}
        if not el.has_list:
            try:
                arr = np.array(chunk, dtype=np.float64).reshape(el.count, len(el.props))
            except ValueError as err:
                raise ValueError(f"{path}: bad PLY '{el.name}' row ({err})") from err
            for j, p in enumerate(el.props):
                cols[p[0]] = arr[:, j]
        else:
            lists: dict[str, list] = {p[0]: [] for p in el.props}
            for row in chunk:
                j = 0
                for p in el.props:
                    if p[1] == "list":
                        n = int(row[j])
                        lists[p[0]].append([int(float(v)) for v in row[j + 1 : j + 1 + n]])
                        j += 1 + n
                    else:
                        lists[p[0]].append(float(row[j]))
                        j += 1
            cols = dict(lists)
        out[el.name] = cols
    return out


def _ply_binary(path: str, fmt: str, elements: list[_PlyElement], body: bytes) -> dict[str, dict]:
    end = "<" if fmt == "binary_little_endian" else ">"
    off = 0
    out: dict[str, dict] = {}
    for el in elements:
        if not el.has_list:
            dt = np.dtype([(p[0], end + p[1]) for p in el.props])
            need = dt.itemsize * el.count
            if off + need > len(body):
                raise ValueError(f"{path}: PLY body ends early in element '{el.name}'")
            rec = np.frombuffer(body, dtype=dt, count=el.count, offset=off)
            off += need
            out[el.name] = {p[0]: rec[p[0]] for p in el.props}
            continue
        cols, off = _ply_binary_lists(path, end, el, body, off)
        out[el.name] = cols
    return out


def _ply_binary_lists(path: str, end: str, el: _PlyElement, body: bytes, off: int):
    """Read an element with list properties: vectorised if every list has the same length."""
    if el.count == 0:
        return {p[0]: [] for p in el.props}, off
    # Fast path: guess a fixed length from the first record and verify it.
    fields, first_off = [], off
    ok = True
    for p in el.props:
        if p[1] == "list":
            ct = np.dtype(end + p[2])
            if first_off + ct.itemsize > len(body):
                ok = False
                break
            n = int(np.frombuffer(body, dtype=ct, count=1, offset=first_off)[0])
            first_off += ct.itemsize + n * np.dtype(p[3]).itemsize
            fields.append((p[0] + "__n", end + p[2]))
            fields.append((p[0], end + p[3], (n,)) if n > 0 else (p[0], end + p[3], (0,)))
        else:
            first_off += np.dtype(p[1]).itemsize
            fields.append((p[0], end + p[1]))
    if ok:
        dt = np.dtype(fields)
        if off + dt.itemsize * el.count <= len(body):
            rec = np.frombuffer(body, dtype=dt, count=el.count, offset=off)
            same = all(
                (rec[p[0] + "__n"] == rec[p[0] + "__n"][0]).all() for p in el.props if p[1] == "list"
            )
            if same:
                cols = {}
                for p in el.props:
                    cols[p[0]] = rec[p[0]]
                    if p[1] == "list":
                        cols[p[0] + "__n"] = rec[p[0] + "__n"]
                return cols, off + dt.itemsize * el.count
    # Slow path: ragged lists, record by record.
    cols = {p[0]: [] for p in el.props}
    for _ in range(el.count):
        for p in el.props:
            if p[1] == "list":
                ct, it = np.dtype(end + p[2]), np.dtype(end + p[3])
                if off + ct.itemsize > len(body):
                    raise ValueError(f"{path}: PLY body ends early in element '{el.name}'")
                n = int(np.frombuffer(body, dtype=ct, count=1, offset=off)[0])
                off += ct.itemsize
                if off + n * it.itemsize > len(body):
                    raise ValueError(f"{path}: PLY body ends early in element '{el.name}'")
                cols[p[0]].append(np.frombuffer(body, dtype=it, count=n, offset=off).tolist())
                off += n * it.itemsize
            else:
                t = np.dtype(end + p[1])
                if off + t.itemsize > len(body):
                    raise ValueError(f"{path}: PLY body ends early in element '{el.name}'")
                cols[p[0]].append(np.frombuffer(body, dtype=t, count=1, offset=off)[0])
                off += t.itemsize
    return cols, off


def _read_ply(path: str) -> Shape:
    with open(path, "rb") as f:
        data = f.read()
    fmt, elements, start = _parse_ply_header(path, data)
    body = data[start:]
    els = _ply_ascii(path, elements, body) if fmt == "ascii" else _ply_binary(path, fmt, elements, body)
    if "vertex" not in els:
        raise ValueError(f"{path}: PLY file has no 'vertex' element")
    vert = els["vertex"]
    missing = [c for c in ("x", "y", "z") if c not in vert]
    if missing:
        raise ValueError(f"{path}: PLY vertex element lacks properties {missing}")
    vertices = np.stack([np.asarray(vert[c], dtype=np.float64) for c in ("x", "y", "z")], axis=1)
    faces = None
    face = els.get("face")
    if face is not None:
        key = next((k for k in ("vertex_indices", "vertex_index") if k in face), None)
        if key is None:
            raise ValueError(f"{path}: PLY face element has no 'vertex_indices' list")
        lists = face[key]
        if isinstance(lists, np.ndarray):
            counts = np.asarray(face[key + "__n"])
            if int(counts[0]) < 3:
                raise ValueError(f"{path}: PLY faces with fewer than 3 vertices")
            faces = _uniform_polygons(counts, lists)
        else:
            faces = _fan([list(map(int, poly)) for poly in lists], path)
    return _finish(path, vertices, faces)


# ----------------------------------------------------------------------------- OFF / OBJ / STL


def _read_off(path: str) -> Shape:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln.split("#", 1)[0].strip() for ln in f]
    lines = [ln for ln in lines if ln]
    if not lines or "OFF" not in lines[0].split()[0]:
        raise ValueError(f"{path}: not an OFF file (first line must start with 'OFF')")
    head = lines[0]
    rest = head[head.index("OFF") + 3 :].split()
    pos = 1
    if not rest:
        if len(lines) < 2:
            raise ValueError(f"{path}: OFF file lacks the vertex/face count line")
        rest = lines[1].split()
        pos = 2
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path}: bad OFF count line {' '.join(rest)!r}") from err
    if len(lines) < pos + nv + nf:
        raise ValueError(
            f"{path}: OFF declares {nv} vertices and {nf} faces but has only "
            f"{len(lines) - pos} data lines"
        )
    try:
        vertices = np.array([ln.split()[:3] for ln in lines[pos : pos + nv]], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: bad OFF vertex line ({err})") from err
    face_rows = [ln.split() for ln in lines[pos + nv : pos + nv + nf]]
    faces = None
    if nf:
        try:
            counts = np.array([int(r[0]) for r in face_rows])
            if (counts == counts[0]).all() and all(len(r) >= counts[0] + 1 for r in face_rows):
                rows = np.array([r[1 : 1 + counts[0]] for r in face_rows], dtype=np.int64)
                if counts[0] < 3:
                    raise ValueError(f"{path}: OFF faces with fewer than 3 vertices")
                faces = _uniform_polygons(counts, rows)
            else:
                faces = _fan([[int(v) for v in r[1 : 1 + int(r[0])]] for r in face_rows], path)
        except (ValueError, IndexError) as err:
            if str(err).startswith(path):
                raise
            raise ValueError(f"{path}: bad OFF face line ({err})") from err
    return _finish(path, vertices.reshape(-1, 3), faces)


def _read_obj(path: str) -> Shape:
    verts: list[list[str]] = []
    polys: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            tok = line.split()
            if not tok:
                continue
            if tok[0] == "v":
                if len(tok) < 4:
                    raise ValueError(f"{path}: line {lineno}: vertex with fewer than 3 coordinates")
                verts.append(tok[1:4])
            elif tok[0] == "f":
                poly = []
                for t in tok[1:]:
                    try:
                        i = int(t.split("/")[0])
                    except ValueError as err:
                        raise ValueError(f"{path}: line {lineno}: bad face index {t!r}") from err
                    poly.append(i - 1 if i > 0 else len(verts) + i)
                if len(poly) < 3:
                    raise ValueError(f"{path}: line {lineno}: face with fewer than 3 vertices")
                polys.append(poly)
    try:
        vertices = np.array(verts, dtype=np.float64).reshape(-1, 3)
    except ValueError as err:
        raise ValueError(f"{path}: bad OBJ vertex ({err})") from err
    faces = _fan(polys, path) if polys else None
    return _finish(path, vertices, faces)


def _read_stl(path: str) -> Shape:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) >= 84:
        n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
        if len(data) == 84 + 50 * n:
            rec = np.frombuffer(
                data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]),
                count=n, offset=84,
            )
            vertices = rec["v"].reshape(-1, 3).astype(np.float64)
            return _finish(path, vertices, np.arange(3 * n).reshape(-1, 3) if n else None)
    if not data.lstrip().startswith(b"solid"):
        raise ValueError(
            f"{path}: not an STL file (binary size does not match its triangle count and "
            "it does not start with 'solid')"
        )
    text = data.decode("ascii", errors="replace")
    nums = re.findall(r"vertex\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if len(nums) % 3:
        raise ValueError(f"{path}: ASCII STL has {len(nums)} vertices, not a multiple of 3")
    try:
        vertices = np.array(nums, dtype=np.float64).reshape(-1, 3)
    except ValueError as err:
        raise ValueError(f"{path}: bad ASCII STL vertex ({err})") from err
    n = vertices.shape[0] // 3
    return _finish(path, vertices, np.arange(3 * n).reshape(-1, 3) if n else None)


_READERS = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".xyz": _read_text_columns,
    ".txt": _read_text_columns,
    ".pts": _read_text_columns,
    ".ply": _read_ply,
    ".off": _read_off,
    ".obj": _read_obj,
    ".stl": _read_stl,
}


def read_shape(path: str | os.PathLike[str]) -> Shape:
    """Read a point cloud or mesh file.

    Args:
        path: a file with one of :data:`SHAPE_EXTENSIONS` (case-insensitive).

    Returns:
        A :class:`Shape`; ``faces`` is ``None`` for clouds (and for mesh files without
        faces, e.g. a vertex-only PLY).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, malformed content, NaN/inf, no points, face
            indices out of range or a mesh with zero surface area.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _READERS:
        raise ValueError(f"{path}: unsupported file type '{ext}'; supported: {list(SHAPE_EXTENSIONS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return _READERS[ext](path)
    except FileNotFoundError:
        raise
    except ValueError as err:
        if str(err).startswith(path):
            raise
        raise ValueError(f"{path}: cannot parse {ext} file ({err})") from err
    except (IndexError, TypeError, UnicodeDecodeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: cannot parse {ext} file ({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------- sampling


def _triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return 0.5 * np.sqrt((cross * cross).sum(axis=1))


def mesh_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total surface area of a triangle mesh. vertices: (V, 3), faces: (F, 3)."""
    return float(_triangle_areas(np.asarray(vertices, dtype=np.float64), faces).sum())


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Sample ``n`` points uniformly by area on a triangle mesh.

    Args:
        vertices: (V, 3) positions.
        faces: (F, 3) integer vertex indices.
        n: number of points.
        rng: numpy Generator (the result is deterministic given its state).

    Returns:
        (n, 3) float64 points.

    Raises:
        ValueError: when the mesh has no faces or zero total area.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.shape[0] == 0:
        raise ValueError("cannot sample a mesh with no faces")
    cum = np.cumsum(_triangle_areas(vertices, faces))
    total = cum[-1]
    if not total > 0.0 or not np.isfinite(total):
        raise ValueError("cannot sample a degenerate mesh (total surface area is zero)")
    tri = np.searchsorted(cum, rng.random(n) * total, side="right")
    np.minimum(tri, faces.shape[0] - 1, out=tri)
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    a, b, c = (vertices[faces[tri, j]] for j in range(3))
    return a + u[:, None] * (b - a) + v[:, None] * (c - a)


def subsample_points(
    points: np.ndarray, n: int, method: str, rng: np.random.Generator | None = None,
    source: str = "<points>",
) -> np.ndarray:
    """Reduce a cloud to exactly ``n`` points.

    Args:
        points: (N, C) array, xyz in the first three columns.
        n: number of points to keep (N >= n).
        method: ``"fps"`` (farthest point sampling from index 0, deterministic),
            ``"random"`` (a random subset, needs ``rng``) or ``"first"``.
        rng: numpy Generator for ``"random"``.
        source: name for error messages.

    Returns:
        (n, C) array (rows of ``points``).
    """
    if method not in ("fps", "random", "first"):
        raise ValueError(f"method must be one of ['fps', 'random', 'first'], got {method!r}")
    count = points.shape[0]
    if count < n:
        raise ValueError(f"{source}: has {count} points, fewer than the {n} asked for")
    if count == n and method != "random":
        return points
    if method == "first":
        return points[:n]
    if method == "random":
        if rng is None:
            raise ValueError("method='random' needs an rng")
        return points[rng.choice(count, n, replace=False)]
    from act3d.data.sampling import fps_indices

    return points[fps_indices(points[:, :3], n)]


def shape_to_points(
    shape: Shape, n: int, rng: np.random.Generator, method: str = "fps", oversample: int = 4
) -> np.ndarray:
    """Turn a shape into exactly ``n`` points, float32 (n, 3).

    Meshes: ``oversample * n`` area-uniform surface samples reduced to ``n`` by ``method``
    (``"random"`` samples ``n`` directly).  Clouds: reduced by ``method``; a cloud with
    fewer than ``n`` points is an error.
    """
    if shape.is_mesh:
        if method == "fps":
            dense = sample_surface(shape.vertices, shape.faces, max(1, oversample) * n, rng)
            return subsample_points(dense, n, "fps", source=shape.source).astype(np.float32)
        return sample_surface(shape.vertices, shape.faces, n, rng).astype(np.float32)
    return subsample_points(shape.vertices, n, method, rng, source=shape.source).astype(np.float32)


def load_points(
    path: str | os.PathLike[str], n: int, *, seed: int = 0, method: str = "fps", oversample: int = 4
) -> np.ndarray:
    """Read any supported file and return exactly ``n`` points as float32 (n, 3).

    Meshes are sampled uniformly by area (seeded by ``seed``); clouds are reduced by FPS
    (``method="fps"``), a random subset or the first ``n``.
    """
    shape = read_shape(path)
    return shape_to_points(shape, n, np.random.default_rng(seed), method=method, oversample=oversample)
