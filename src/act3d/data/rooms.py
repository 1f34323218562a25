"""Synthetic S3DIS-like rooms: the embedded stand-in for S3DIS in tests and the demo.

A room is an axis-aligned box, z up, in metres (3.5-6.5 m wide and deep, 2.6-3.2 m high),
with per-point labels of the 13 S3DIS classes (:data:`act3d.data.s3dis.S3DIS_CLASSES`):

- floor and ceiling planes; four walls with **doors** (recessed), **windows** (recessed
  deeper) and **boards** (standing proud of the wall) cut out of them; sometimes a
  **beam** across the ceiling and **columns** against the walls;
- furniture from the synthetic shape world (:func:`act3d.data.synthetic.shape_triangles`):
  **tables** with **chairs** (chairs and stools) around them, **bookcases** and **sofas**
  against the walls, and **clutter**: lamps, boxes on the floor, monitors, mugs, bottles and
  vases on the tables.

Surfaces are sampled uniformly by area at ``density`` points per m² (default 600, so a 1 m
column holds well over 1,024 points from floor and ceiling alone), with Gaussian noise; the
floor is not occluded under furniture. Each room gets a random offset in x, y and z (like
the raw S3DIS coordinates; the npy preprocessing subtracts the minimum). Colours are a
base colour per class with per-object and per-point jitter.

Everything is deterministic from ``(seed, split, index)``; ``train`` and ``test`` rooms come
from different seed streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from act3d.data.s3dis import S3DIS_CLASSES, Room
from act3d.data.synthetic import CLASSES as SHAPE_CLASSES
from act3d.data.synthetic import shape_triangles

__all__ = ["ROOM_SPLITS", "generate_room", "synthetic_rooms"]

ROOM_SPLITS: dict[str, int] = {"train": 0x5A1, "test": 0x7E5}

_L = {name: i for i, name in enumerate(S3DIS_CLASSES)}
_SHAPE = {name: i for i, name in enumerate(SHAPE_CLASSES)}
_Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_BASE_COLORS = {
    "ceiling": (215, 215, 210), "floor": (150, 120, 95), "wall": (200, 195, 185),
    "beam": (190, 185, 175), "column": (180, 180, 170), "window": (120, 160, 200),
    "door": (140, 90, 60), "table": (170, 130, 90), "chair": (70, 70, 80),
    "sofa": (120, 60, 60), "bookcase": (110, 80, 50), "board": (240, 240, 240),
    "clutter": (100, 140, 100),
}  # fmt: skip


@dataclass
class _Part:
    points: np.ndarray  # (M, 3)
    label: int


def _rect(origin, u, v, density: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform points on the parallelogram ``origin + s u + t v``, s, t in [0, 1] -> (M, 3)."""
    origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
    area = float(np.linalg.norm(np.cross(u, v)))
    count = int(rng.poisson(density * area))
    st = rng.random((count, 2))
    return origin + st[:, :1] * u + st[:, 1:] * v


def _box_faces(lo, hi, density: float, rng: np.random.Generator, skip: tuple[str, ...] = ()) -> np.ndarray:
    """Points on the faces of the axis-aligned box [lo, hi]; ``skip`` names faces
    (``-x +x -y +y -z +z``) left out (hidden against a wall, floor or ceiling)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    size = hi - lo
    out = []
    for axis in range(3):
        u_axis, v_axis = (axis + 1) % 3, (axis + 2) % 3
        u, v = np.zeros(3), np.zeros(3)
        u[u_axis], v[v_axis] = size[u_axis], size[v_axis]
        for sign, value in (("-", lo[axis]), ("+", hi[axis])):
            if f"{sign}{'xyz'[axis]}" in skip:
                continue
            origin = lo.copy()
            origin[axis] = value
            out.append(_rect(origin, u, v, density, rng))
    return np.concatenate(out) if out else np.zeros((0, 3))


def _sample_triangles(tris: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Area-uniform points on triangles (F, 3, 3) at ``density`` per m² -> (M, 3)."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    areas = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    count = int(rng.poisson(density * areas.sum()))
    cum = np.cumsum(areas)
    pick = np.minimum(np.searchsorted(cum, rng.random(count) * cum[-1], side="right"), len(tris) - 1)
    uv = rng.random((count, 2))
    flip = uv.sum(axis=1) > 1
    uv[flip] = 1 - uv[flip]
    return tris[pick, 0] + uv[:, :1] * e1[pick] + uv[:, 1:] * e2[pick]


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _shape(name: str, rng: np.random.Generator, height: float | None = None,
           footprint: tuple[float, float] | None = None) -> np.ndarray:
    """A shape-world object as z-up triangles standing on z = 0, centred in xy.

    Its back (the shape world's -z side) faces +y. ``height`` rescales uniformly (or only z
    with ``footprint``); ``footprint`` = (x size, y size) rescales x and y.
    """
    tris = shape_triangles(_SHAPE[name], rng) @ _Y_UP_TO_Z_UP.T
    v = tris.reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    tris = tris - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    size = hi - lo
    scale = np.ones(3)
    if height is not None:
        scale[:] = height / size[2]
    if footprint is not None:
        scale[0], scale[1] = footprint[0] / size[0], footprint[1] / size[1]
        if height is None:
            scale[2] = 1.0
    return tris * scale


class _Floorplan:
    """Axis-aligned footprints already taken, for rejection placement."""

    def __init__(self, width: float, depth: float) -> None:
        self.width, self.depth = width, depth
        self.boxes: list[tuple[float, float, float, float]] = []

    def fits(self, box: tuple[float, float, float, float], gap: float, ignore: int | None = None) -> bool:
        x0, y0, x1, y1 = box
        if x0 < -1e-9 or y0 < -1e-9 or x1 > self.width + 1e-9 or y1 > self.depth + 1e-9:
            return False
        for i, (a0, b0, a1, b1) in enumerate(self.boxes):
            if i != ignore and x0 < a1 + gap and a0 < x1 + gap and y0 < b1 + gap and b0 < y1 + gap:
                return False
        return True

    def add(self, box: tuple[float, float, float, float]) -> int:
        self.boxes.append(box)
        return len(self.boxes) - 1


def _placed(tris: np.ndarray, yaw: float, at) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    moved = tris @ _rot_z(yaw).T + np.asarray(at, dtype=np.float64)
    v = moved.reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    return moved, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def _half_extents(tris: np.ndarray, yaw: float) -> tuple[float, float]:
    v = tris.reshape(-1, 3) @ _rot_z(yaw).T
    return float(np.abs(v[:, 0]).max()), float(np.abs(v[:, 1]).max())


# The yaw that turns an object's back (+y) towards wall k: y = D, x = W, y = 0, x = 0.
_WALL_YAW = (0.0, -math.pi / 2, math.pi, math.pi / 2)


def _against_wall(tris: np.ndarray, wall: int, along: float, plan: _Floorplan, gap: float = 0.03):
    yaw = _WALL_YAW[wall]
    hx, hy = _half_extents(tris, yaw)
    w, d = plan.width, plan.depth
    if wall == 0:
        at = (along, d - hy - gap, 0.0)
    elif wall == 1:
        at = (w - hx - gap, along, 0.0)
    elif wall == 2:
        at = (along, hy + gap, 0.0)
    else:
        at = (hx + gap, along, 0.0)
    return _placed(tris, yaw, at)


class _RoomBuilder:
    def __init__(self, rng: np.random.Generator, density: float) -> None:
        self.rng, self.density = rng, density
        self.width = float(rng.uniform(3.5, 6.5))
        self.depth = float(rng.uniform(3.5, 6.5))
        self.height = float(rng.uniform(2.6, 3.2))
        self.plan = _Floorplan(self.width, self.depth)
        self.parts: list[_Part] = []
        # per wall: openings (start, end along the wall, z0, z1, label, offset into the room)
        self.openings: list[list[tuple[float, float, float, float, int, float]]] = [[] for _ in range(4)]
        self.ceiling_holes: list[tuple[float, float, float, float]] = []

    def wall_length(self, wall: int) -> float:
        return self.width if wall in (0, 2) else self.depth

    def add(self, points: np.ndarray, label: str) -> None:
        if len(points):
            self.parts.append(_Part(points, _L[label]))

    # -- structure --------------------------------------------------------------

    def reserve(self, wall: int, width: float, margin: float = 0.15) -> float | None:
        length = self.wall_length(wall)
        if width + 2 * margin > length:
            return None
        for _ in range(30):
            start = float(self.rng.uniform(margin, length - margin - width))
            if all(start + width + 0.1 <= a or b + 0.1 <= start for a, b, *_ in self.openings[wall]):
                return start
        return None

    def wall_point(self, wall: int, along: float, inward: float) -> np.ndarray:
        w, d = self.width, self.depth
        return np.array([(along, d - inward), (w - inward, along), (along, inward), (inward, along)][wall])

    def structure(self) -> None:
        rng = self.rng
        for _ in range(int(rng.integers(1, 3))):  # doors, recessed into the wall
            wall, width = int(rng.integers(4)), float(rng.uniform(0.85, 1.1))
            start = self.reserve(wall, width)
            if start is not None:
                top = float(rng.uniform(2.0, 2.25))
                self.openings[wall].append((start, start + width, 0.0, top, _L["door"], -0.04))
                box = self._front_box(wall, start, start + width, 1.0)
                self.plan.add(box)
        for _ in range(int(rng.integers(0, 4))):  # windows
            wall, width = int(rng.integers(4)), float(rng.uniform(0.8, 2.0))
            start = self.reserve(wall, width)
            if start is not None:
                z0 = float(rng.uniform(0.8, 1.0))
                z1 = min(self.height - 0.2, z0 + float(rng.uniform(1.0, 1.5)))
                self.openings[wall].append((start, start + width, z0, z1, _L["window"], -0.12))
        if rng.random() < 0.7:  # a board on a wall
            wall, width = int(rng.integers(4)), float(rng.uniform(1.2, 2.8))
            start = self.reserve(wall, width)
            if start is not None:
                z0 = float(rng.uniform(0.8, 1.0))
                z1 = z0 + float(rng.uniform(0.9, 1.2))
                self.openings[wall].append((start, start + width, z0, z1, _L["board"], 0.02))
        for _ in range(int(rng.choice(3, p=[0.5, 0.3, 0.2]))):  # columns against a wall
            wall, width = int(rng.integers(4)), float(rng.uniform(0.3, 0.6))
            start = self.reserve(wall, width, margin=0.0)
            if start is not None:
                proud = float(rng.uniform(0.2, 0.5))
                self.openings[wall].append((start, start + width, 0.0, self.height, _L["column"], proud))
                self.plan.add(self._front_box(wall, start, start + width, proud))
        if rng.random() < 0.5:  # a beam across the ceiling
            along_x = bool(rng.random() < 0.5)
            width, drop = float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.3, 0.6))
            span = self.depth if along_x else self.width
            c = float(rng.uniform(0.3 * span, 0.7 * span))
            h = self.height
            if along_x:
                lo, hi = (0.0, c - width / 2, h - drop), (self.width, c + width / 2, h)
            else:
                lo, hi = (c - width / 2, 0.0, h - drop), (c + width / 2, self.depth, h)
            hidden = ("+z", "-x", "+x") if along_x else ("+z", "-y", "+y")  # against ceiling and walls
            self.add(_box_faces(lo, hi, self.density, rng, skip=hidden), "beam")
            self.ceiling_holes.append((lo[0], lo[1], hi[0], hi[1]))

    def _front_box(self, wall: int, a: float, b: float, depth: float) -> tuple[float, float, float, float]:
        p0, p1 = self.wall_point(wall, a, 0.0), self.wall_point(wall, b, depth)
        return (min(p0[0], p1[0]), min(p0[1], p1[1]), max(p0[0], p1[0]), max(p0[1], p1[1]))

    def surfaces(self) -> None:
        rng, dens, w, d, h = self.rng, self.density, self.width, self.depth, self.height
        self.add(_rect((0, 0, 0), (w, 0, 0), (0, d, 0), dens, rng), "floor")
        ceiling = _rect((0, 0, h), (w, 0, 0), (0, d, 0), dens, rng)
        for x0, y0, x1, y1 in self.ceiling_holes:
            under = (ceiling[:, 0] >= x0) & (ceiling[:, 0] <= x1) & (ceiling[:, 1] >= y0) & (ceiling[:, 1] <= y1)
            ceiling = ceiling[~under]
        self.add(ceiling, "ceiling")
        for wall in range(4):
            length = self.wall_length(wall)
            start = self.wall_point(wall, 0.0, 0.0)
            along = self.wall_point(wall, 1.0, 0.0) - start
            inward = self.wall_point(wall, 0.0, 1.0) - start
            along3, inward3 = np.array([*along, 0.0]), np.array([*inward, 0.0])
            origin = np.array([*start, 0.0])
            pts = _rect(origin, along3 * length, (0, 0, h), dens, rng)
            s = (pts[:, :2] - start) @ along
            keep = np.ones(len(pts), dtype=bool)
            for a, b, z0, z1, label, offset in self.openings[wall]:
                keep &= ~((s >= a) & (s <= b) & (pts[:, 2] >= z0) & (pts[:, 2] <= z1))
                if label == _L["column"]:
                    lo = origin + along3 * a
                    faces = [
                        _rect(lo + inward3 * offset, along3 * (b - a), (0, 0, h), dens, rng),
                        _rect(lo, inward3 * offset, (0, 0, h), dens, rng),
                        _rect(lo + along3 * (b - a), inward3 * offset, (0, 0, h), dens, rng),
                    ]
                    self.add(np.concatenate(faces), "column")
                else:
                    panel = _rect(origin + along3 * a + inward3 * offset + np.array([0, 0, z0]),
                                  along3 * (b - a), (0, 0, z1 - z0), dens, rng)
                    self.add(panel, S3DIS_CLASSES[label])
            self.add(pts[keep], "wall")

    # -- furniture ----------------------------------------------------------------

    def _put(self, tris: np.ndarray, label: str, box) -> None:
        self.plan.add(box)
        self.add(_sample_triangles(tris, self.density, self.rng), label)

    def wall_furniture(self) -> None:
        rng = self.rng
        items = ["bookshelf"] * int(rng.integers(0, 4)) + ["sofa"] * int(rng.random() < 0.4)
        for name in items:
            if name == "bookshelf":
                tris = _shape(name, rng, height=float(rng.uniform(1.6, 2.2)),
                              footprint=(float(rng.uniform(0.8, 1.6)), float(rng.uniform(0.3, 0.45))))
                label = "bookcase"
            else:
                tris = _shape(name, rng, height=float(rng.uniform(0.75, 0.9)))
                label = "sofa"
            for _ in range(30):
                wall = int(rng.integers(4))
                moved, box = _against_wall(tris, wall, float(rng.uniform(0, self.wall_length(wall))), self.plan)
                if self.plan.fits(box, 0.05):
                    self._put(moved, label, box)
                    break

    def tables(self) -> None:
        rng = self.rng
        for _ in range(int(rng.integers(1, 4))):
            footprint = None
            if rng.random() < 0.6:  # office desks are bigger than the shape world's tables
                footprint = (float(rng.uniform(1.2, 2.0)), float(rng.uniform(0.7, 0.9)))
            tris = _shape("table", rng, height=float(rng.uniform(0.7, 0.78)), footprint=footprint)
            yaw = float(rng.choice([0.0, math.pi / 2])) + float(rng.normal(0, 0.05))
            hx, hy = _half_extents(tris, yaw)
            for _ in range(40):
                if 2 * hx + 0.4 > self.width or 2 * hy + 0.4 > self.depth:
                    break
                at = (
                    float(rng.uniform(hx + 0.2, self.width - hx - 0.2)),
                    float(rng.uniform(hy + 0.2, self.depth - hy - 0.2)),
                    0.0,
                )
                moved, box = _placed(tris, yaw, at)
                if self.plan.fits(box, 0.5):
                    self._put(moved, "table", box)
                    self.on_table(moved, box)
                    self.chairs(box)
                    break

    def on_table(self, table: np.ndarray, box) -> None:
        rng = self.rng
        top = float(table.reshape(-1, 3)[:, 2].max())
        x0, y0, x1, y1 = box
        cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, 0.35 * (x1 - x0), 0.35 * (y1 - y0)
        for _ in range(int(rng.integers(0, 4))):
            name = str(rng.choice(["monitor", "mug", "bottle", "vase"]))
            height = float(rng.uniform(0.35, 0.5)) if name == "monitor" else float(rng.uniform(0.1, 0.3))
            tris = _shape(name, rng, height=height)
            at = (cx + float(rng.uniform(-sx, sx)), cy + float(rng.uniform(-sy, sy)), top)
            moved, _ = _placed(tris, float(rng.uniform(0, 2 * math.pi)), at)
            self.add(_sample_triangles(moved, self.density, rng), "clutter")

    def chairs(self, table_box) -> None:
        rng = self.rng
        x0, y0, x1, y1 = table_box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for _ in range(int(rng.integers(1, 5))):
            name = "chair" if rng.random() < 0.8 else "stool"
            height = float(rng.uniform(0.85, 1.0)) if name == "chair" else float(rng.uniform(0.45, 0.7))
            tris = _shape(name, rng, height=height)
            for _ in range(15):
                side = int(rng.integers(4))
                if side in (0, 2):
                    px = float(rng.uniform(x0 + 0.2, x1 - 0.2)) if x1 - x0 > 0.4 else cx
                    direction = np.array([0.0, 1.0 if side == 0 else -1.0])
                    py = (y1 if side == 0 else y0) + direction[1] * 0.35
                else:
                    py = float(rng.uniform(y0 + 0.2, y1 - 0.2)) if y1 - y0 > 0.4 else cy
                    direction = np.array([1.0 if side == 1 else -1.0, 0.0])
                    px = (x1 if side == 1 else x0) + direction[0] * 0.35
                # the chair's back (+y) points away from the table
                yaw = math.atan2(-direction[0], direction[1]) + float(rng.normal(0, 0.3))
                moved, box = _placed(tris, yaw, (px, py, 0.0))
                if self.plan.fits(box, 0.05):
                    self._put(moved, "chair", box)
                    break

    def floor_clutter(self) -> None:
        rng = self.rng
        for _ in range(int(rng.integers(0, 3))):  # lamps
            tris = _shape("lamp", rng)
            yaw = float(rng.uniform(0, 2 * math.pi))
            hx, hy = _half_extents(tris, yaw)
            for _ in range(20):
                at = (float(rng.uniform(hx, self.width - hx)), float(rng.uniform(hy, self.depth - hy)), 0.0)
                moved, box = _placed(tris, yaw, at)
                if self.plan.fits(box, 0.1):
                    self._put(moved, "clutter", box)
                    break
        for _ in range(int(rng.integers(0, 4))):  # boxes and bins, often by a wall
            size = rng.uniform([0.25, 0.25, 0.2], [0.7, 0.6, 0.8])
            for _ in range(20):
                x = float(rng.uniform(0, self.width - size[0]))
                y = float(rng.uniform(0, self.depth - size[1]))
                box = (x, y, x + float(size[0]), y + float(size[1]))
                if self.plan.fits(box, 0.05):
                    self.plan.add(box)
                    faces = _box_faces((x, y, 0.0), (box[2], box[3], float(size[2])), self.density, rng, skip=("-z",))
                    self.add(faces, "clutter")
                    break

    def build(self, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.structure()
        self.wall_furniture()
        self.tables()
        self.floor_clutter()
        self.surfaces()
        rng = self.rng
        points, labels, colors = [], [], []
        for part in self.parts:
            base = np.array(_BASE_COLORS[S3DIS_CLASSES[part.label]], dtype=np.float64)
            base = base + rng.normal(0, 12, 3)
            points.append(part.points)
            labels.append(np.full(len(part.points), part.label, dtype=np.int64))
            colors.append(base + rng.normal(0, 6, (len(part.points), 3)))
        xyz = np.concatenate(points)
        xyz = xyz + rng.normal(0, noise, xyz.shape)
        return xyz, np.clip(np.rint(np.concatenate(colors)), 0, 255).astype(np.uint8), np.concatenate(labels)


def generate_room(
    index: int, split: str = "train", *, seed: int = 0, density: float = 600.0, noise: float = 0.003
) -> Room:
    """One synthetic room.

    Args:
        index: the room's number in its split.
        split: ``"train"`` or ``"test"`` (separate seed streams).
        seed: base seed; the room is a function of ``(seed, split, index, density, noise)``.
        density: surface points per m².
        noise: standard deviation of the Gaussian point noise (metres).

    Returns:
        A :class:`~act3d.data.s3dis.Room` named ``synthetic_<split>_<index>``, xyz offset by a
        random translation (z up, metres).
    """
    if split not in ROOM_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {list(ROOM_SPLITS)}")
    if density <= 0 or noise < 0:
        raise ValueError(f"density must be positive and noise non-negative, got {density} and {noise}")
    rng = np.random.default_rng([int(seed), ROOM_SPLITS[split], int(index)])
    xyz, colors, labels = _RoomBuilder(rng, float(density)).build(float(noise))
    offset = np.array([rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(-0.5, 3.0)])
    name = f"synthetic_{split}_{index}"
    return Room(name, (xyz + offset).astype(np.float32), colors, labels, source=f"synthetic-rooms[{split}][{index}]")


def synthetic_rooms(
    split: str, num_rooms: int, *, seed: int = 0, density: float = 600.0, noise: float = 0.003
) -> list[Room]:
    """Rooms ``0 .. num_rooms - 1`` of ``split`` (see :func:`generate_room`)."""
    if num_rooms < 1:
        raise ValueError(f"num_rooms must be positive, got {num_rooms}")
    return [generate_room(i, split, seed=seed, density=density, noise=noise) for i in range(num_rooms)]
