"""A procedural world of part-based objects: the embedded default dataset.

Each class is an assembly of parts (boxes, surfaces of revolution: cylinders, cones,
spheres, tori, lathed profiles; extruded outlines: wings, guitar bodies, car bodies) with
randomised proportions and part styles, e.g. a chair is a seat, legs *or* a pedestal with a
star base *or* sled runners, a solid or slatted back that may tilt, optional armrests.
Points are sampled uniformly by area over all part triangles; shapes are y-up and
normalised to the unit sphere.

The scan-like mode imitates ScanObjectNN: the object stands on a floor patch with clutter
(and sometimes a wall), a camera at a random azimuth and elevation sees it, a depth
buffer keeps only the visible points, the scene is cropped to the object's enlarged box,
noise is added and the result is rotated about the up axis.

Everything is deterministic from ``(seed, split, index)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from act3d.data.datasets import PointCloudDataset

__all__ = [
    "CATEGORY_PARTS",
    "CLASSES",
    "DEFAULT_SIZES",
    "NUM_PARTS",
    "PART_LABELS",
    "PART_NAMES",
    "PART_SPLITS",
    "SyntheticParts",
    "SyntheticShapes",
    "generate_part_shape",
    "generate_shape",
    "generate_shapes",
    "shape_part_triangles",
    "shape_triangles",
]

# ============================================================================ geometry


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _align_y(d: np.ndarray) -> np.ndarray:
    """Rotation taking +y to the unit direction ``d`` (Rodrigues)."""
    d = d / np.linalg.norm(d)
    y = np.array([0.0, 1.0, 0.0])
    v = np.cross(y, d)
    c = float(y @ d)
    if c < -1 + 1e-9:
        return np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


@lru_cache(maxsize=None)
def _unit_cube() -> np.ndarray:
    """(12, 3, 3) triangles of the cube [-0.5, 0.5]^3 (outward winding)."""
    tris = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-0.5, 0.5):
            quad = np.zeros((4, 3))
            quad[:, axis] = sign
            quad[:, u] = [-0.5, 0.5, 0.5, -0.5]
            quad[:, v] = [-0.5, -0.5, 0.5, 0.5]
            if sign < 0:
                quad = quad[::-1]
            tris += [quad[[0, 1, 2]], quad[[0, 2, 3]]]
    return np.array(tris)


@lru_cache(maxsize=None)
def _ring(segs: int, a0: float, a1: float) -> tuple[np.ndarray, np.ndarray]:
    ang = np.linspace(a0, a1, segs + 1)
    return np.cos(ang), np.sin(ang)


def _lathe_tris(
    profile: np.ndarray, segs: int = 24, arc: tuple[float, float] = (0.0, 2 * math.pi)
) -> np.ndarray:
    """Revolve a (K, 2) profile of (radius, y) about the y axis -> (2*(K-1)*segs, 3, 3)."""
    c, s = _ring(segs, float(arc[0]), float(arc[1]))
    r, y = profile[:, 0][:, None], profile[:, 1][:, None]
    ring = np.stack([r * c, np.broadcast_to(y, (len(profile), segs + 1)), r * s], axis=-1)  # (K, S+1, 3)
    a, b = ring[:-1, :-1], ring[:-1, 1:]
    d, e = ring[1:, :-1], ring[1:, 1:]
    t1 = np.stack([a, d, e], axis=2).reshape(-1, 3, 3)
    t2 = np.stack([a, e, b], axis=2).reshape(-1, 3, 3)
    return np.concatenate([t1, t2])


def _star_prism_tris(outline: np.ndarray, thickness: float) -> np.ndarray:
    """Extrude a 2D outline (K, 2) in the (x, z) plane along y, centred on y = 0.

    The outline must be star-shaped with respect to its vertex mean (fan triangulation).
    """
    k = len(outline)
    c = outline.mean(axis=0)
    nxt = np.roll(np.arange(k), -1)
    h = thickness / 2

    def lift(p2: np.ndarray, y: float) -> np.ndarray:
        return np.stack([p2[..., 0], np.full(p2.shape[:-1], y), p2[..., 1]], axis=-1)

    cc = np.broadcast_to(c, (k, 2))
    top = np.stack([lift(cc, h), lift(outline, h), lift(outline[nxt], h)], axis=1)
    bot = np.stack([lift(cc, -h), lift(outline[nxt], -h), lift(outline, -h)], axis=1)
    p, q = outline, outline[nxt]
    side1 = np.stack([lift(p, -h), lift(q, -h), lift(q, h)], axis=1)
    side2 = np.stack([lift(p, -h), lift(q, h), lift(p, h)], axis=1)
    return np.concatenate([top, bot, side1, side2])


class _Soup:
    """A growing list of world-space triangles (a triangle soup).

    Every triangle is tagged with the semantic part it belongs to: the value of ``part``
    when it was added (builders set ``soup.part = "legs"`` before adding legs), or a
    per-triangle name given to :meth:`add` / per profile segment to :meth:`lathe`.  The
    tags never change the triangles themselves.
    """

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.chunk_parts: list[str | np.ndarray] = []
        self.part = "body"

    def add(
        self, tris: np.ndarray, scale=(1.0, 1.0, 1.0), rot: np.ndarray | None = None, at=(0.0, 0.0, 0.0),
        parts: np.ndarray | None = None,
    ) -> None:
        t = tris * np.asarray(scale, dtype=np.float64)
        if rot is not None:
            t = t @ rot.T
        if parts is not None and len(parts) != len(t):
            raise ValueError(f"got {len(parts)} part names for {len(t)} triangles")
        self.chunks.append(t + np.asarray(at, dtype=np.float64))
        self.chunk_parts.append(self.part if parts is None else np.asarray(parts))

    def box(self, center, size, rot: np.ndarray | None = None) -> None:
        self.add(_unit_cube(), scale=size, rot=rot, at=center)

    def box_between(self, y0: float, y1: float, x0: float, x1: float, z0: float, z1: float) -> None:
        self.box(((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), (abs(x1 - x0), abs(y1 - y0), abs(z1 - z0)))

    def lathe(
        self, profile, at=(0, 0, 0), rot=None, scale=(1, 1, 1), segs: int = 24, arc=(0.0, 2 * math.pi),
        segment_parts=None,
    ) -> None:
        """Revolve a (K, 2) profile; ``segment_parts`` names the part of each of its K - 1
        segments (default: all ``self.part``)."""
        profile = np.asarray(profile, dtype=np.float64)
        parts = None
        if segment_parts is not None:
            if len(segment_parts) != len(profile) - 1:
                raise ValueError(f"got {len(segment_parts)} segment parts for {len(profile) - 1} segments")
            # _lathe_tris: two triangles per (segment, sector), each set segment-major
            parts = np.tile(np.repeat(np.asarray(segment_parts), segs), 2)
        self.add(_lathe_tris(profile, segs, arc), scale=scale, rot=rot, at=at, parts=parts)

    def cylinder(self, at, radius: float, height: float, rot=None, r_top: float | None = None,
                 caps: bool = True, scale=(1, 1, 1), segs: int = 24) -> None:
        """A (truncated) cone/cylinder standing on ``at`` (its bottom centre) along +y."""
        rt = radius if r_top is None else r_top
        prof = [(radius, 0.0), (rt, height)]
        if caps:
            prof = [(0.0, 0.0)] + prof + [(0.0, height)]
        self.lathe(prof, at=at, rot=rot, scale=scale, segs=segs)

    def rod(self, p0, p1, radius: float, segs: int = 12, square: bool = False) -> None:
        p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
        d = p1 - p0
        length = float(np.linalg.norm(d))
        rot = _align_y(d)
        if square:
            self.add(_unit_cube(), scale=(2 * radius, length, 2 * radius), rot=rot, at=p0 + d / 2)
        else:
            self.cylinder(p0, radius, length, rot=rot, caps=True, segs=segs)

    def sphere(self, at, radii, segs: int = 16) -> None:
        a = np.linspace(-math.pi / 2, math.pi / 2, segs // 2 + 1)
        self.lathe(np.stack([np.cos(a), np.sin(a)], axis=1), at=at, scale=radii, segs=segs)

    def torus(self, at, major: float, minor: float, rot=None, arc=(0.0, 2 * math.pi), segs: int = 24,
              minor_scale=(1.0, 1.0)) -> None:
        a = np.linspace(0, 2 * math.pi, 13)
        radius = major + minor * minor_scale[0] * np.cos(a)
        prof = np.stack([radius, minor * minor_scale[1] * np.sin(a)], axis=1)
        self.lathe(prof, at=at, rot=rot, segs=segs, arc=arc)

    def prism(self, outline, thickness: float, rot=None, at=(0, 0, 0)) -> None:
        self.add(_star_prism_tris(np.asarray(outline, dtype=np.float64), thickness), rot=rot, at=at)

    def triangles(self) -> np.ndarray:
        """(F, 3, 3) all triangles, in the order they were added."""
        return np.concatenate(self.chunks)

    def triangle_parts(self) -> np.ndarray:
        """(F,) the part name of every triangle, aligned with :meth:`triangles`."""
        return np.concatenate(
            [np.full(len(t), p) if isinstance(p, str) else p for t, p in zip(self.chunks, self.chunk_parts)]
        )


def _star_outline(
    ellipses: list[tuple[float, float, float, float]], center: tuple[float, float], n: int = 72
) -> np.ndarray:
    """Outline of a union of axis-aligned ellipses (cx, cy, ax, ay) seen from ``center``.

    Every ellipse must contain ``center``; the union is then star-shaped about it and its
    boundary along each ray is the farthest exit point.  Returns (n, 2).
    """
    th = np.linspace(0, 2 * math.pi, n, endpoint=False)
    d = np.stack([np.cos(th), np.sin(th)], axis=1)
    best = np.zeros(n)
    for cx, cy, ax, ay in ellipses:
        ox, oy = (center[0] - cx) / ax, (center[1] - cy) / ay
        dx, dy = d[:, 0] / ax, d[:, 1] / ay
        a = dx * dx + dy * dy
        b = 2 * (ox * dx + oy * dy)
        c = ox * ox + oy * oy - 1
        t = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0))) / (2 * a)
        best = np.maximum(best, t)
    return np.asarray(center) + d * best[:, None]


# ============================================================================ classes


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _chair(rng: np.random.Generator, s: _Soup) -> None:
    w, d = _u(rng, 0.42, 0.6), _u(rng, 0.4, 0.55)
    t, h = _u(rng, 0.04, 0.08), _u(rng, 0.4, 0.5)
    s.part = "seat"
    s.box((0, h - t / 2, 0), (w, t, d))
    s.part = "legs"
    base = rng.choice(3, p=[0.6, 0.25, 0.15])
    if base == 0:  # four legs, maybe splayed, maybe stretchers
        lt, inset, splay = _u(rng, 0.03, 0.055), _u(rng, 0.0, 0.04), _u(rng, 0.0, 0.05)
        square = bool(rng.random() < 0.5)
        feet = []
        for sx in (-1, 1):
            for sz in (-1, 1):
                top = np.array([sx * (w / 2 - lt / 2 - inset), h - t, sz * (d / 2 - lt / 2 - inset)])
                bot = np.array([top[0] + sx * splay, 0.0, top[2] + sz * splay])
                s.rod(top, bot, lt / 2, square=square)
                feet.append(bot + 0.35 * (top - bot))
        if rng.random() < 0.4:
            for a, b in ((0, 1), (2, 3), (0, 2)):
                s.rod(feet[a], feet[b], lt / 3)
    elif base == 1:  # office chair: column, star base, casters
        s.cylinder((0, 0.08, 0), 0.03, h - t - 0.08)
        s.cylinder((0, h - t - 0.05, 0), 0.07, 0.05)
        arms = int(rng.choice([4, 5]))
        reach = _u(rng, 0.25, 0.32)
        for k in range(arms):
            a = 2 * math.pi * k / arms + 0.3
            end = np.array([reach * math.cos(a), 0.05, reach * math.sin(a)])
            s.rod((0, 0.09, 0), end, 0.022, square=True)
            s.sphere(end - (0, 0.025, 0), (0.025, 0.025, 0.025), segs=8)
    else:  # sled runners
        r = _u(rng, 0.012, 0.02)
        for sx in (-1, 1):
            x = sx * (w / 2 - 0.02)
            pts = [(x, h - t, d / 2 - 0.03), (x, 0.0, d / 2), (x, 0.0, -d / 2), (x, h - t, -d / 2 + 0.03)]
            for p0, p1 in zip(pts[:-1], pts[1:]):
                s.rod(p0, p1, r)
    s.part = "back"
    bh, bt, tilt = _u(rng, 0.35, 0.6), _u(rng, 0.03, 0.06), _u(rng, 0.0, 0.28)
    rot = _rot_x(-tilt)
    at = np.array([0, h, -d / 2 + bt / 2])
    if rng.random() < 0.65:  # solid back
        bw = w * _u(rng, 0.85, 1.0)
        s.box(at + rot @ np.array([0, bh / 2, 0]), (bw, bh, bt), rot=rot)
    else:  # two posts, a top rail and slats
        for sx in (-1, 1):
            s.box(at + rot @ np.array([sx * (w / 2 - 0.025), bh / 2, 0]), (0.04, bh, bt), rot=rot)
        rail = _u(rng, 0.06, 0.12)
        s.box(at + rot @ np.array([0, bh - rail / 2, 0]), (w, rail, bt), rot=rot)
        k = int(rng.integers(2, 5))
        for j in range(k):
            x = (j + 1) / (k + 1) * (w - 0.05) - (w - 0.05) / 2
            s.box(at + rot @ np.array([x, (bh - rail) / 2, 0]), (0.03, bh - rail, bt * 0.6), rot=rot)
    s.part = "arms"
    if rng.random() < 0.3:  # armrests
        ah = _u(rng, 0.18, 0.26)
        for sx in (-1, 1):
            x = sx * (w / 2 + 0.02)
            s.box((x, h + ah, -0.02), (0.05, 0.035, d * 0.85))
            s.rod((x, h - t, d * 0.3), (x, h + ah, d * 0.3), 0.018)


def _table(rng: np.random.Generator, s: _Soup) -> None:
    h, t = _u(rng, 0.65, 0.8), _u(rng, 0.03, 0.07)
    s.part = "top"
    round_top = rng.random() < 0.3
    if round_top:
        r = _u(rng, 0.45, 0.7)
        w = d = 2 * r
        s.cylinder((0, h - t, 0), r, t, segs=32)
    else:
        w, d = _u(rng, 0.9, 1.6), _u(rng, 0.55, 1.0)
        s.box((0, h - t / 2, 0), (w, t, d))
    s.part = "legs"
    style = rng.choice(3, p=[0.2, 0.7, 0.1] if round_top else [0.65, 0.15, 0.2])
    if style == 0 or (style == 2 and round_top):
        lt, inset = _u(rng, 0.04, 0.08), _u(rng, 0.02, 0.1)
        square = bool(rng.random() < 0.6)
        if round_top:
            angles = np.arange(4) * math.pi / 2 + math.pi / 4
            spots = [(0.3 * w * math.cos(a), 0.3 * d * math.sin(a)) for a in angles]
        else:
            ox, oz = w / 2 - lt / 2 - inset, d / 2 - lt / 2 - inset
            spots = [(sx * ox, sz * oz) for sx in (-1, 1) for sz in (-1, 1)]
        for x, z in spots:
            s.rod((x, 0, z), (x, h - t, z), lt / 2, square=square)
        s.part = "frame"
        if not round_top and rng.random() < 0.5:  # apron
            ah = _u(rng, 0.06, 0.12)
            for sz in (-1, 1):
                s.box((0, h - t - ah / 2, sz * (d / 2 - inset - lt / 2)), (w - 2 * inset, ah, 0.02))
            for sx in (-1, 1):
                s.box((sx * (w / 2 - inset - lt / 2), h - t - ah / 2, 0), (0.02, ah, d - 2 * inset))
        if rng.random() < 0.2:  # lower shelf
            s.box((0, _u(rng, 0.1, 0.25), 0), (w - 2 * inset - lt, 0.025, d - 2 * inset - lt))
    elif style == 1:  # pedestal
        s.cylinder((0, 0, 0), _u(rng, 0.04, 0.1), h - t, segs=16)
        if rng.random() < 0.5:
            s.cylinder((0, 0, 0), _u(rng, 0.2, 0.35), 0.04, r_top=0.12)
        else:
            for k in range(4):
                a = k * math.pi / 2 + math.pi / 4
                s.rod((0, 0.03, 0), (0.3 * math.cos(a), 0.02, 0.3 * math.sin(a)), 0.03, square=True)
    else:  # trestle: two end panels and a stretcher
        pt = _u(rng, 0.04, 0.08)
        for sx in (-1, 1):
            x = sx * (w / 2 - _u(rng, 0.08, 0.15))
            s.box((x, (h - t) / 2, 0), (pt, h - t, d * 0.8))
            s.box((x, 0.02, 0), (pt * 1.5, 0.04, d * 0.9))
        s.part = "frame"
        s.box((0, (h - t) * 0.4, 0), (w * 0.7, 0.06, 0.04))


def _lamp(rng: np.random.Generator, s: _Soup) -> None:
    kind = rng.choice(3, p=[0.4, 0.35, 0.25])
    br = _u(rng, 0.12, 0.22)
    s.part = "base"
    if rng.random() < 0.7:
        s.cylinder((0, 0, 0), br, _u(rng, 0.025, 0.05), r_top=br * _u(rng, 0.7, 1.0), segs=24)
    else:
        s.box((0, 0.02, 0), (2 * br, 0.04, 2 * br))
    if kind < 2:  # floor or desk lamp with a shade
        ph = _u(rng, 1.2, 1.7) if kind == 0 else _u(rng, 0.3, 0.55)
        s.part = "pole"
        s.cylinder((0, 0.03, 0), _u(rng, 0.012, 0.022), ph, segs=10)
        sh = _u(rng, 0.18, 0.35) * (1.0 if kind == 0 else 0.9)
        rb = _u(rng, 0.18, 0.32) * (1.0 if kind == 0 else 0.85)
        rt = rb * _u(rng, 0.45, 0.85)
        y0 = ph + 0.03 - sh * _u(rng, 0.4, 0.75)
        s.part = "shade"
        s.cylinder((0, y0, 0), rb, sh, r_top=rt, caps=False, segs=28)
        s.part = "bulb"
        s.sphere((0, y0 + sh * 0.35, 0), (0.045, 0.06, 0.045), segs=10)
    else:  # articulated desk lamp
        a1, a2 = _u(rng, -0.5, 0.2), _u(rng, 0.6, 1.3)
        l1, l2 = _u(rng, 0.4, 0.6), _u(rng, 0.35, 0.55)
        p0 = np.array([0.0, 0.04, 0.0])
        p1 = p0 + l1 * np.array([math.sin(a1), math.cos(a1), 0.0])
        p2 = p1 + l2 * np.array([math.sin(a2), math.cos(a2), 0.0])
        s.part = "pole"
        s.rod(p0, p1, 0.015)
        s.rod(p1, p2, 0.015)
        s.sphere(p1, (0.03, 0.03, 0.03), segs=8)
        cone_h, cone_r = _u(rng, 0.12, 0.2), _u(rng, 0.08, 0.14)
        rot = _align_y(np.array([math.sin(a2 + 1.9), math.cos(a2 + 1.9), 0.0]))
        s.part = "shade"
        s.cylinder(p2, 0.03, cone_h, r_top=cone_r, caps=False, rot=rot, segs=20)
        s.part = "bulb"
        s.sphere(p2, (0.035, 0.035, 0.035), segs=8)


def _mug(rng: np.random.Generator, s: _Soup) -> None:
    r, h = _u(rng, 0.3, 0.42), _u(rng, 0.7, 1.05)
    rb = r * _u(rng, 0.8, 1.0)
    wall = _u(rng, 0.02, 0.04)
    s.part = "body"
    s.lathe([(0, 0), (rb, 0), (r, h), (r - wall, h), (rb - wall, wall), (0, wall)], segs=32)
    s.part = "handle"
    hy, hr = h * _u(rng, 0.45, 0.55), h * _u(rng, 0.24, 0.34)
    minor = _u(rng, 0.035, 0.055)
    r_mid = rb + (r - rb) * hy / h
    if rng.random() < 0.75:  # round handle: half torus in the xy plane
        s.torus((r_mid - minor * 0.5, hy, 0), hr, minor, rot=_rot_x(math.pi / 2),
                arc=(-math.pi / 2, math.pi / 2), segs=16, minor_scale=(1.0, _u(rng, 0.6, 1.0)))
    else:  # squared handle
        out = _u(rng, 0.18, 0.28)
        y0, y1 = hy - hr, hy + hr
        s.rod((r_mid - 0.02, y0, 0), (r_mid + out, y0, 0), minor, square=True)
        s.rod((r_mid - 0.02, y1, 0), (r_mid + out, y1, 0), minor, square=True)
        s.rod((r_mid + out, y0 - minor, 0), (r_mid + out, y1 + minor, 0), minor, square=True)


def _bottle(rng: np.random.Generator, s: _Soup) -> None:
    r, hb = _u(rng, 0.12, 0.22), _u(rng, 0.45, 0.8)
    rn = r * _u(rng, 0.22, 0.45)
    hs, hn = _u(rng, 0.06, 0.25), _u(rng, 0.08, 0.35)
    t = np.linspace(0, 1, 7)
    shoulder = np.stack([rn + (r - rn) * (0.5 + 0.5 * np.cos(math.pi * t)), hb + hs * t], axis=1)
    rc, hc = rn * _u(rng, 1.05, 1.3), _u(rng, 0.03, 0.08)
    top = hb + hs + hn
    prof = [(0, 0), (r * 0.9, 0), (r, 0.03)] + shoulder.tolist() + [
        (rn, top), (rc, top), (rc, top + hc), (0, top + hc)]
    if rng.random() < 0.3:  # waisted body
        prof = prof[:3] + [(r * _u(rng, 0.8, 0.92), hb * 0.5)] + prof[3:]
    # parts by segment height: body up to the end of the shoulder, neck, cap from the rim
    mid_y = [(p[1] + q[1]) / 2 for p, q in zip(prof[:-1], prof[1:])]
    names = ["body" if y < hb + hs else "neck" if y < top else "cap" for y in mid_y]
    s.lathe(prof, segs=28, segment_parts=names)


def _vase(rng: np.random.Generator, s: _Soup) -> None:
    h, r0 = _u(rng, 0.6, 1.2), _u(rng, 0.15, 0.3)
    t = np.linspace(0, 1, 14)
    bulge = _u(rng, 0.2, 0.8)
    phase, freq = _u(rng, -0.3, 0.3), _u(rng, 0.8, 1.6)
    rad = r0 * (1 + bulge * np.sin(math.pi * (freq * t + phase)).clip(-0.6, 1))
    rad[-1] = rad[-2] * _u(rng, 0.9, 1.35)  # lip
    prof = [(0, 0)] + list(zip(rad, h * t)) + [(rad[-1] * 0.92, h), (rad[-2] * 0.9, h * 0.85)]
    # the last three segments (the flare to the rim and the inside of the rim) are the lip
    names = ["body"] * (len(prof) - 4) + ["lip"] * 3
    s.lathe(prof, segs=28, segment_parts=names)
    s.part = "foot"
    if rng.random() < 0.35:  # foot ring
        s.cylinder((0, -0.04, 0), rad[0] * 0.8, 0.04, segs=24)


def _airplane(rng: np.random.Generator, s: _Soup) -> None:
    length, rf = _u(rng, 1.6, 2.2), _u(rng, 0.07, 0.12)
    nose, tail = _u(rng, 0.15, 0.3), _u(rng, 0.3, 0.5)
    t = np.linspace(0, 1, 6)
    nose_prof = np.stack([rf * np.sqrt(1 - (1 - t) ** 2), -length / 2 + nose * t], axis=1)
    tail_prof = np.stack([rf * (1 - 0.8 * t), length / 2 - tail + tail * t], axis=1)
    prof = [(0, -length / 2)] + nose_prof.tolist() + tail_prof.tolist() + [(0, length / 2)]
    to_z = _rot_x(-math.pi / 2)  # lathe axis y -> -z ... nose at +z
    s.part = "fuselage"
    s.lathe(prof, rot=to_z, scale=(1, 1, 1), segs=20)
    s.part = "wings"
    span, cr = _u(rng, 0.7, 1.1), _u(rng, 0.3, 0.5)
    ct, sweep = cr * _u(rng, 0.25, 0.55), _u(rng, 0.0, 0.45)
    wz = _u(rng, -0.05, 0.25)
    wy = rf * _u(rng, -0.6, 0.6)
    dihedral = _u(rng, -0.05, 0.12)
    for sx in (-1, 1):
        lead = wz + cr / 2
        outline = [(0, lead), (sx * span, lead - sweep), (sx * span, lead - sweep - ct), (0, wz - cr / 2)]
        s.prism(outline, _u(rng, 0.02, 0.04), rot=_rot_z(sx * dihedral), at=(0, wy, 0))
    # horizontal stabiliser and vertical fin at the tail
    s.part = "tail"
    hs, hc = span * _u(rng, 0.25, 0.4), cr * _u(rng, 0.4, 0.6)
    tz = -length / 2 + tail * 0.45
    for sx in (-1, 1):
        stab = [(0, tz + hc / 2), (sx * hs, tz), (sx * hs, tz - hc * 0.3), (0, tz - hc / 2)]
        s.prism(stab, 0.02, at=(0, rf * 0.3, 0))
    fh = _u(rng, 0.2, 0.4)
    fin = [(0, tz + hc * 0.8), (fh, tz - hc * 0.1), (fh, tz - hc * 0.5), (0, tz - hc * 0.6)]
    s.prism(fin, 0.02, rot=_rot_z(math.pi / 2), at=(0, rf * 0.6, 0))
    s.part = "engines"
    engines = int(rng.choice([0, 2, 4], p=[0.3, 0.5, 0.2]))
    for k in range(engines):
        sx = -1 if k % 2 == 0 else 1
        frac = 0.35 if k < 2 else 0.65
        x = sx * span * frac
        ez = wz + cr / 2 - sweep * frac + 0.1
        er, el = _u(rng, 0.04, 0.07), _u(rng, 0.2, 0.3)
        s.cylinder((x, wy - er * 1.3, ez - el), er, el, rot=_rot_x(math.pi / 2), r_top=er * 0.8, segs=12)


# maps a prism built as (a, thickness, b) to (x=thickness, y=b, z=a): side profiles (z, y)
_SIDE_VIEW = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def _car(rng: np.random.Generator, s: _Soup) -> None:
    kind = rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])  # sedan, suv, pickup, sports
    length = _u(rng, 1.7, 2.2)
    width = length * _u(rng, 0.4, 0.48)
    wr = length * _u(rng, 0.08, 0.1) * (1.15 if kind == 1 else 1.0)
    clear = wr * _u(rng, 0.5, 0.8)
    bh = length * (_u(rng, 0.14, 0.18) if kind != 3 else _u(rng, 0.1, 0.13))
    ch = length * (_u(rng, 0.14, 0.18) if kind != 3 else _u(rng, 0.09, 0.11)) * (1.25 if kind == 1 else 1.0)
    cham = bh * 0.35
    y0, y1 = clear, clear + bh
    # lower body: chamfered side profile (z, y), extruded across x
    half = length / 2
    s.part = "body"
    body = [(-half, y0 + cham), (-half + cham, y0), (half - cham, y0), (half, y0 + cham),
            (half, y1 - cham * 0.6), (half - cham * 1.5, y1), (-half + cham * 0.5, y1),
            (-half, y1 - cham * 0.4)]
    s.add(_star_prism_tris(np.array(body), width), rot=_SIDE_VIEW)
    # cabin: trapezoid side profile
    if kind == 2:  # pickup: short cabin in front, open bed behind
        c0, c1 = -length * 0.05, length * 0.2
    elif kind == 1:
        c0, c1 = -length / 2 + 0.05, length * 0.15
    else:
        c0, c1 = -length * 0.3, length * 0.12
    rake = ch * _u(rng, 0.6, 1.4)
    rear = c0 + rake * (0.3 if kind == 1 else 0.7)
    cabin = [(c0, y1 - 0.01), (c1 + rake, y1 - 0.01), (c1, y1 + ch), (rear, y1 + ch)]
    cw = width * _u(rng, 0.82, 0.92)
    s.part = "cabin"
    s.add(_star_prism_tris(np.array(cabin), cw), rot=_SIDE_VIEW)
    s.part = "body"
    if kind == 2:  # bed walls
        bz0, bz1 = -length / 2 + 0.02, c0 - 0.02
        wall_h = ch * 0.45
        for sx in (-1, 1):
            s.box(((sx * (width / 2 - 0.02)), y1 + wall_h / 2, (bz0 + bz1) / 2), (0.04, wall_h, bz1 - bz0))
        s.box((0, y1 + wall_h / 2, bz0), (width, wall_h, 0.04))
    s.part = "wheels"
    axle = length / 2 - wr * _u(rng, 1.4, 1.9)
    for sz in (-1, 1):
        for sx in (-1, 1):
            ww = _u(rng, 0.12, 0.16) * width
            at = (sx * (width / 2 - ww * 0.4), wr, sz * axle)
            s.cylinder(at, wr, ww, rot=_rot_z(-sx * math.pi / 2), segs=20)


def _bookshelf(rng: np.random.Generator, s: _Soup) -> None:
    w, h, d = _u(rng, 0.6, 1.3), _u(rng, 0.9, 2.0), _u(rng, 0.25, 0.4)
    t = _u(rng, 0.02, 0.04)
    plinth = _u(rng, 0.0, 0.08)
    s.part = "frame"
    for sx in (-1, 1):
        s.box((sx * (w / 2 - t / 2), h / 2, 0), (t, h, d))
    s.box((0, h - t / 2, 0), (w, t, d))
    s.part = "shelves"
    s.box((0, plinth + t / 2, 0), (w - 2 * t, t, d))
    s.part = "frame"
    if plinth > 0.02:
        s.box((0, plinth / 2, d / 2 - t), (w - 2 * t, plinth, t))
    if rng.random() < 0.8:
        s.box((0, h / 2, -d / 2 + 0.005), (w, h, 0.01))
    k = int(rng.integers(2, 6))
    levels = plinth + t + (h - plinth - 2 * t) * np.arange(1, k + 1) / (k + 1)
    s.part = "shelves"
    for y in levels:
        s.box((0, y, 0), (w - 2 * t, t, d - 0.01))
    s.part = "books"
    if rng.random() < 0.4:  # books on the shelves
        gap = (h - plinth - 2 * t) / (k + 1)
        for y in np.concatenate([[plinth + t], levels]):
            x = -w / 2 + t
            while rng.random() < 0.85:
                bw = _u(rng, 0.02, 0.06)
                if x + bw > w / 2 - t:
                    break
                bh = gap * _u(rng, 0.55, 0.9)
                s.box((x + bw / 2, y + t / 2 + bh / 2, 0.0), (bw, bh, d * _u(rng, 0.6, 0.9)))
                x += bw + _u(rng, 0.0, 0.05)


def _sofa(rng: np.random.Generator, s: _Soup) -> None:
    length, d = _u(rng, 1.5, 2.4), _u(rng, 0.75, 1.0)
    legs = _u(rng, 0.03, 0.12)
    base_h = _u(rng, 0.2, 0.3)
    s.part = "base"
    s.box((0, legs + base_h / 2, 0), (length, base_h, d))
    for sx in (-1, 1):
        for sz in (-1, 1):
            s.box((sx * (length / 2 - 0.06), legs / 2, sz * (d / 2 - 0.06)), (0.05, legs, 0.05))
    arm_w, arm_h = _u(rng, 0.1, 0.25), _u(rng, 0.22, 0.35)
    seat_y = legs + base_h
    cushions = int(rng.integers(1, 4))
    inner = length - 2 * arm_w
    bt = _u(rng, 0.15, 0.25)
    ch = _u(rng, 0.08, 0.15)
    s.part = "cushions"
    for j in range(cushions):
        cw = inner / cushions
        s.box((-inner / 2 + cw * (j + 0.5), seat_y + ch / 2, bt / 2), (cw * 0.97, ch, d - bt))
    back_h = _u(rng, 0.35, 0.6)
    tilt = _u(rng, 0.0, 0.2)
    rot = _rot_x(-tilt)
    back_at = np.array([0, seat_y, -d / 2 + bt / 2]) + rot @ np.array([0, back_h / 2, 0])
    s.part = "back"
    s.box(back_at, (length, back_h, bt), rot=rot)
    s.part = "arms"
    round_arms = rng.random() < 0.4
    for sx in (-1, 1):
        x = sx * (length / 2 - arm_w / 2)
        s.box((x, seat_y + arm_h / 2, 0), (arm_w, arm_h, d))
        if round_arms:
            s.cylinder((x, seat_y + arm_h, -d / 2), arm_w / 2, d, rot=_rot_x(math.pi / 2), segs=16)
    s.part = "base"
    if rng.random() < 0.2:  # chaise extension
        sx = rng.choice([-1, 1])
        ext = _u(rng, 0.5, 0.8)
        s.box((sx * (length / 2 - 0.35), legs + base_h / 2, d / 2 + ext / 2), (0.7, base_h, ext))


def _bed(rng: np.random.Generator, s: _Soup) -> None:
    length, w = _u(rng, 1.9, 2.2), _u(rng, 0.9, 1.8)
    legs, frame_h, mat_h = _u(rng, 0.03, 0.15), _u(rng, 0.12, 0.25), _u(rng, 0.15, 0.25)
    s.part = "frame"
    s.box((0, legs + frame_h / 2, 0), (w, frame_h, length))
    s.part = "mattress"
    s.box((0, legs + frame_h + mat_h / 2, 0.02), (w * 0.97, mat_h, length * 0.96))
    s.part = "frame"
    for sx in (-1, 1):
        for sz in (-1, 1):
            s.box((sx * (w / 2 - 0.05), legs / 2, sz * (length / 2 - 0.05)), (0.06, legs, 0.06))
    hb = _u(rng, 0.45, 0.9)
    top = legs + frame_h + mat_h + hb
    s.part = "boards"
    s.box((0, top / 2, -length / 2 - 0.03), (w + 0.06, top, _u(rng, 0.04, 0.1)))
    if rng.random() < 0.5:
        fb = top * _u(rng, 0.4, 0.75)
        s.box((0, fb / 2, length / 2 + 0.03), (w + 0.06, fb, 0.05))
    s.part = "pillows"
    pillows = 1 if w < 1.2 else 2
    py = legs + frame_h + mat_h + 0.04
    for j in range(pillows):
        x = 0.0 if pillows == 1 else (j - 0.5) * w * 0.5
        s.sphere((x, py, -length / 2 + 0.25), (min(0.3, w / (2 * pillows) * 0.85), 0.06, 0.16), segs=14)
    s.part = "mattress"
    if rng.random() < 0.4:  # blanket over the foot end
        s.box((0, legs + frame_h + mat_h + 0.01, length * 0.2), (w * 1.02, 0.03, length * 0.55))


def _guitar(rng: np.random.Generator, s: _Soup) -> None:
    lower, upper = _u(rng, 0.22, 0.3), _u(rng, 0.15, 0.22)
    lower_h, upper_h = lower * _u(rng, 1.0, 1.25), upper * _u(rng, 0.95, 1.2)
    gap = _u(rng, 0.22, 0.3)
    ells = [(0.0, 0.0, lower, lower_h), (0.0, gap + 0.05, upper, upper_h)]
    outline = _star_outline(ells, (0.0, gap * 0.5))
    depth = _u(rng, 0.05, 0.12)
    s.part = "body"
    s.prism(outline, depth, rot=_rot_x(-math.pi / 2))  # outline (x, y), thickness along z
    s.part = "neck"
    top = gap + 0.05 + upper_h
    neck = _u(rng, 0.45, 0.6)
    nw = _u(rng, 0.045, 0.06)
    s.box((0, top + neck / 2 - 0.03, depth * 0.2), (nw, neck, 0.03))
    hl = _u(rng, 0.1, 0.16)
    back = _u(rng, 0.1, 0.3)
    rot = _rot_x(-back)
    head_at = np.array([0, top + neck - 0.03, depth * 0.2]) + rot @ np.array([0, hl / 2, 0])
    s.part = "head"
    s.box(head_at, (nw * 1.5, hl, 0.025), rot=rot)
    s.part = "body"
    s.box((0, -lower_h * 0.4, depth / 2 + 0.005), (lower * 0.7, 0.04, 0.012))  # bridge


def _monitor(rng: np.random.Generator, s: _Soup) -> None:
    w = _u(rng, 0.8, 1.2)
    h = w * _u(rng, 0.5, 0.78)
    t = _u(rng, 0.02, 0.05)
    lift = _u(rng, 0.05, 0.25)
    kind = rng.choice(3, p=[0.55, 0.25, 0.2])
    y = lift + h / 2 + 0.03
    s.part = "screen"
    s.box((0, y, 0), (w, h, t))
    if rng.random() < 0.2:  # bulky back
        s.box((0, y, -t / 2 - 0.1), (w * 0.6, h * 0.6, 0.2))
    s.part = "stand"
    if kind == 0:  # neck and base
        s.box((0, (y - 0.1) / 2 + 0.02, -t / 2 - 0.03), (0.06, y - 0.1, 0.03))
        if rng.random() < 0.5:
            s.box((0, 0.015, -0.03), (w * _u(rng, 0.25, 0.45), 0.03, _u(rng, 0.18, 0.28)))
        else:
            s.cylinder((0, 0, -0.03), _u(rng, 0.12, 0.2), 0.03, segs=24)
    elif kind == 1:  # two feet
        for sx in (-1, 1):
            x = sx * w * _u(rng, 0.3, 0.42)
            s.rod((x, lift + 0.03, 0), (x, 0.0, 0.08), 0.015, square=True)
            s.rod((x, lift + 0.03, 0), (x, 0.0, -0.08), 0.015, square=True)
    else:  # pedestal console
        s.box((0, lift / 2 + 0.015, 0), (w * 0.5, lift + 0.03, 0.25))


def _stool(rng: np.random.Generator, s: _Soup) -> None:
    h, r = _u(rng, 0.45, 0.8), _u(rng, 0.14, 0.22)
    t = _u(rng, 0.03, 0.06)
    s.part = "seat"
    if rng.random() < 0.5:
        s.cylinder((0, h - t, 0), r, t, segs=28)
    else:
        s.box((0, h - t / 2, 0), (2 * r, t, 2 * r))
    s.part = "legs"
    if rng.random() < 0.7:
        n = int(rng.choice([3, 4]))
        splay = _u(rng, 0.02, 0.12)
        lr = _u(rng, 0.012, 0.025)
        feet = []
        for k in range(n):
            a = 2 * math.pi * k / n + math.pi / 4
            top = np.array([0.75 * r * math.cos(a), h - t, 0.75 * r * math.sin(a)])
            bot = np.array([(0.75 * r + splay) * math.cos(a), 0.0, (0.75 * r + splay) * math.sin(a)])
            s.rod(top, bot, lr)
            feet.append(bot + 0.3 * (top - bot))
        s.part = "ring"
        if rng.random() < 0.6:
            rr = 0.75 * r + splay * 0.7
            s.torus((0, 0.3 * (h - t), 0), rr, lr * 0.8, segs=24)
    else:
        s.cylinder((0, 0, 0), _u(rng, 0.02, 0.04), h - t, segs=12)
        s.cylinder((0, 0, 0), _u(rng, 0.16, 0.24), 0.03, r_top=0.05, segs=24)
        s.part = "ring"
        if rng.random() < 0.5:
            s.torus((0, h * 0.35, 0), _u(rng, 0.13, 0.18), 0.012, segs=24)


_BUILDERS: dict[str, Callable[[np.random.Generator, _Soup], None]] = {
    "airplane": _airplane,
    "bed": _bed,
    "bookshelf": _bookshelf,
    "bottle": _bottle,
    "car": _car,
    "chair": _chair,
    "guitar": _guitar,
    "lamp": _lamp,
    "monitor": _monitor,
    "mug": _mug,
    "sofa": _sofa,
    "stool": _stool,
    "table": _table,
    "vase": _vase,
}

CLASSES: tuple[str, ...] = tuple(_BUILDERS)

DEFAULT_SIZES: dict[str, int] = {
    "pretrain": 300 * len(CLASSES),
    "train": 150 * len(CLASSES),
    "test": 50 * len(CLASSES),
}

_SPLIT_CODES = {"pretrain": 11, "train": 23, "test": 37}

# The semantic parts of each class, in the order of their ids (what each builder tags).
PART_NAMES: dict[str, tuple[str, ...]] = {
    "airplane": ("fuselage", "wings", "tail", "engines"),
    "bed": ("frame", "mattress", "boards", "pillows"),
    "bookshelf": ("frame", "shelves", "books"),
    "bottle": ("body", "neck", "cap"),
    "car": ("body", "cabin", "wheels"),
    "chair": ("seat", "legs", "back", "arms"),
    "guitar": ("body", "neck", "head"),
    "lamp": ("base", "pole", "shade", "bulb"),
    "monitor": ("screen", "stand"),
    "mug": ("body", "handle"),
    "sofa": ("base", "cushions", "back", "arms"),
    "stool": ("seat", "legs", "ring"),
    "table": ("top", "legs", "frame"),
    "vase": ("body", "lip", "foot"),
}
"""Part names per class. Some parts are optional (chair arms, airplane engines, books,
stool rings, vase feet, table frames: apron, lower shelf or stretcher), as in ShapeNetPart."""

CATEGORY_PARTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(range(sum(len(PART_NAMES[c]) for c in CLASSES[:i]), sum(len(PART_NAMES[c]) for c in CLASSES[: i + 1])))
    for i in range(len(CLASSES))
)
"""Global part ids of each class, in :data:`CLASSES` order (consecutive, like ShapeNetPart's)."""

PART_LABELS: tuple[str, ...] = tuple(f"{c}/{p}" for c in CLASSES for p in PART_NAMES[c])
"""``"<class>/<part>"`` name of every global part id."""

NUM_PARTS: int = len(PART_LABELS)

PART_SPLITS: tuple[str, ...] = ("train", "val", "test")
_PART_SPLIT_CODES = {"train": _SPLIT_CODES["train"], "val": 41, "test": _SPLIT_CODES["test"]}
_PART_DEFAULT_SIZES = {"train": 100 * len(CLASSES), "val": 15 * len(CLASSES), "test": 30 * len(CLASSES)}


# ============================================================================ sampling


def _build(label: int, rng: np.random.Generator) -> _Soup:
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    soup = _Soup()
    _BUILDERS[CLASSES[label]](rng, soup)
    return soup


def shape_triangles(label: int, rng: np.random.Generator) -> np.ndarray:
    """Triangles of one random instance of class ``label`` -> (F, 3, 3), y-up, on y >= 0."""
    return _build(label, rng).triangles()


def shape_part_triangles(label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of one random instance of class ``label`` and the part of each.

    The triangles equal :func:`shape_triangles` for the same ``rng`` state.

    Returns:
        ``(tris (F, 3, 3), parts (F,) int64)``: global part ids (see :data:`CATEGORY_PARTS`).
    """
    soup = _build(label, rng)
    name = CLASSES[label]
    ids = {part: CATEGORY_PARTS[label][k] for k, part in enumerate(PART_NAMES[name])}
    tags = soup.triangle_parts()
    unknown = sorted(set(np.unique(tags).tolist()) - set(ids))
    if unknown:
        raise ValueError(f"the {name} builder tags parts {unknown} missing from PART_NAMES[{name!r}]")
    parts = np.empty(len(tags), dtype=np.int64)
    for part, pid in ids.items():
        parts[tags == part] = pid
    return soup.triangles(), parts


def _sample_tris(tris: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Area-uniform samples on a triangle soup (F, 3, 3) -> (n, 3)."""
    return _sample_tris_picked(tris, n, rng)[0]


def _sample_tris_picked(tris: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform samples (n, 3) and the triangle (n,) each was drawn from."""
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    cross = np.cross(e1, e2)
    cum = np.cumsum(np.sqrt((cross * cross).sum(axis=1)))
    pick = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(tris) - 1)
    uv = rng.random((n, 2))
    flip = uv.sum(axis=1) > 1
    uv[flip] = 1 - uv[flip]
    return tris[pick, 0] + uv[:, :1] * e1[pick] + uv[:, 1:] * e2[pick], pick


def _area(tris: np.ndarray) -> float:
    cross = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    return float(np.sqrt((cross * cross).sum(axis=1)).sum() / 2)


def _unit_sphere(points: np.ndarray) -> np.ndarray:
    c = points - points.mean(axis=0)
    return c / np.sqrt((c * c).sum(axis=1)).max()


def _fit_tris(tris: np.ndarray) -> np.ndarray:
    """Place triangles on the floor (min y = 0), centred in x/z, max vertex radius 1."""
    v = tris.reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    shift = np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    t = tris - shift
    r = np.sqrt((t.reshape(-1, 3) ** 2).sum(axis=1)).max()
    return t / r


def _clutter(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    cam_az: float,
    floor_lo: np.ndarray,
    floor_hi: np.ndarray,
) -> np.ndarray:
    """Floor patch (only where the crop box will keep it), maybe a wall behind the object,
    and 0-3 simple objects around it (triangles)."""
    s = _Soup()
    half = max(hi[0] - lo[0], hi[2] - lo[2]) / 2
    (x0, _, z0), (x1, _, z1) = floor_lo, floor_hi
    s.add(np.array([[[x0, 0, z0], [x1, 0, z0], [x1, 0, z1]], [[x0, 0, z0], [x1, 0, z1], [x0, 0, z1]]]))
    if rng.random() < 0.3:  # a wall on the far side from the camera
        a = cam_az + math.pi + _u(rng, -0.4, 0.4)
        dist = half + _u(rng, 0.05, 0.3)
        wall_h = floor_hi[1] * 1.05  # the crop box keeps nothing above its top
        at = (dist * math.cos(a), wall_h / 2, dist * math.sin(a))
        s.box(at, (0.02, wall_h, 2.6 * half), rot=_rot_y(-a))
    for _ in range(int(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15]))):
        a = _u(rng, 0, 2 * math.pi)
        dist = half + _u(rng, 0.1, 0.7)
        at = (dist * math.cos(a), 0.0, dist * math.sin(a))
        sz = rng.uniform(0.15, 0.6, size=3)
        kind = rng.integers(3)
        if kind == 0:
            s.box((at[0], sz[1] / 2, at[2]), sz, rot=_rot_y(_u(rng, 0, math.pi)))
        elif kind == 1:
            s.cylinder(at, sz[0] / 2, sz[1], segs=16)
        else:
            s.sphere((at[0], sz[0] / 2, at[2]), (sz[0] / 2,) * 3, segs=12)
    return s.triangles()


def _visible(
    points: np.ndarray, eye: np.ndarray, target: np.ndarray, window: np.ndarray, grid: int
) -> np.ndarray:
    """Depth-buffer visibility from ``eye`` looking at ``target`` -> bool (n,).

    The image window spans the projections of ``points[window]``; every point projecting
    into it occludes.  A point is visible when it lies within two pixel footprints of its
    pixel's nearest depth; points outside the window are reported invisible.
    """
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    rel = points - eye
    depth = rel @ fwd
    u, v = (rel @ right) / depth, (rel @ up) / depth
    lo_u, lo_v = u[window].min(), v[window].min()
    span = max(u[window].max() - lo_u, v[window].max() - lo_v) * 1.001 + 1e-9
    iu = np.floor((u - lo_u) / span * grid).astype(np.int64)
    iv = np.floor((v - lo_v) / span * grid).astype(np.int64)
    inside = (iu >= 0) & (iu < grid) & (iv >= 0) & (iv < grid) & (depth > 0)
    pix = iu[inside] * grid + iv[inside]
    zbuf = np.full(grid * grid, np.inf)
    np.minimum.at(zbuf, pix, depth[inside])
    near = zbuf[pix]
    tol = 2.0 * near * span / grid + 0.01
    seen = np.zeros(len(points), dtype=bool)
    seen[inside] = depth[inside] <= near + tol
    return seen


def _scan(obj_tris: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """ScanObjectNN-like partial, cluttered, noisy view of an object -> (n, 3)."""
    obj = _fit_tris(obj_tris)
    v = obj.reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    az, el = _u(rng, 0, 2 * math.pi), _u(rng, math.radians(15), math.radians(55))
    dist = _u(rng, 2.5, 4.0)
    target = np.array([0.0, (hi[1] - lo[1]) * 0.45, 0.0])
    eye = target + dist * np.array([math.cos(el) * math.cos(az), math.sin(el), math.cos(el) * math.sin(az)])
    grow = np.array([_u(rng, 1.05, 1.25), 1.0, _u(rng, 1.05, 1.25)])
    box_lo = np.array([lo[0] * grow[0], -0.05, lo[2] * grow[2]])
    box_hi = np.array([hi[0] * grow[0], hi[1] * _u(rng, 1.02, 1.15), hi[2] * grow[2]])
    bg = _clutter(rng, lo, hi, az, box_lo, box_hi)
    obj_area, bg_area = _area(obj), _area(bg)
    density = 2.2 * n / obj_area
    pts = np.empty((0, 3))
    for _ in range(4):
        p_obj = _sample_tris(obj, int(density * obj_area), rng)
        both = np.concatenate([p_obj, _sample_tris(bg, int(density * bg_area), rng)])
        in_box = ((both >= box_lo) & (both <= box_hi)).all(axis=1)
        grid = int(np.clip(math.sqrt(len(p_obj) / 4.0), 16, 256))
        pts = both[_visible(both, eye, target, in_box, grid=grid) & in_box]
        if len(pts) >= n:
            break
        density *= 1.3 * n / max(len(pts), n / 4)
    pick = rng.choice(len(pts), n, replace=len(pts) < n)
    pts = pts[pick] + rng.normal(0.0, _u(rng, 0.002, 0.008), size=(n, 3))
    out = rng.random(n) < _u(rng, 0.0, 0.01)  # a few outliers in the box
    pts[out] = rng.uniform(box_lo, box_hi, size=(int(out.sum()), 3))
    pts = pts @ _rot_y(_u(rng, 0, 2 * math.pi)).T
    return _unit_sphere(pts)


def generate_shape(label: int, num_points: int, rng: np.random.Generator, scan: bool = False) -> np.ndarray:
    """One random object of class ``label`` as (num_points, 3) float32 on the unit sphere.

    Args:
        label: class index into :data:`CLASSES`.
        num_points: number of surface points.
        rng: numpy Generator (the shape is a function of its state).
        scan: ScanObjectNN-like partial view with clutter and noise instead of a clean
            full surface sample.
    """
    tris = shape_triangles(label, rng)
    if scan:
        return _scan(tris, num_points, rng).astype(np.float32)
    return _unit_sphere(_sample_tris(tris, num_points, rng)).astype(np.float32)


def generate_part_shape(label: int, num_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random object of class ``label`` with the part of every point.

    The points equal ``generate_shape(label, num_points, rng)`` for the same ``rng`` state.

    Returns:
        ``(points (num_points, 3) float32 on the unit sphere, parts (num_points,) int64)``
        with global part ids (:data:`CATEGORY_PARTS`).
    """
    tris, tri_parts = shape_part_triangles(label, rng)
    points, pick = _sample_tris_picked(tris, num_points, rng)
    return _unit_sphere(points).astype(np.float32), tri_parts[pick]


def _shape_rng(seed: int, split: str, scan: bool, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], int(scan), int(index)])


def _shape_label(split: str, index: int, rng: np.random.Generator) -> int:
    return int(rng.integers(len(CLASSES))) if split == "pretrain" else index % len(CLASSES)


def generate_shapes(
    num_shapes: int, num_points: int = 2048, *, split: str = "train", scan: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``num_shapes`` shapes at once.

    Returns:
        points: (num_shapes, num_points, 3) float32; labels: (num_shapes,) int64 (class
        indices, also for ``split="pretrain"`` whose dataset hides them).  Shape ``i`` equals
        ``SyntheticShapes(split, ...)`` item ``i`` before sampling.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {list(_SPLIT_CODES)}, got {split!r}")
    pts = np.empty((num_shapes, num_points, 3), dtype=np.float32)
    labels = np.empty(num_shapes, dtype=np.int64)
    for i in range(num_shapes):
        rng = _shape_rng(seed, split, scan, i)
        labels[i] = _shape_label(split, i, rng)
        pts[i] = generate_shape(int(labels[i]), num_points, rng, scan=scan)
    return pts, labels


class SyntheticShapes(PointCloudDataset):
    """The procedural dataset: ``len(CLASSES)`` classes, generated lazily per index.

    Args:
        split: ``"pretrain"`` (unlabeled pool, label ``-1``), ``"train"`` or ``"test"``
            (labeled, balanced: class ``index % num_classes``); each split has its own
            seed stream, so no shape repeats across splits.
        num_points: points per sample.
        num_samples: dataset length (default :data:`DEFAULT_SIZES`).
        scan: ScanObjectNN-like partial views (see module docstring).
        seed: base seed; item ``i`` is a function of ``(seed, split, scan, i)`` only.
        raw_points: points generated per shape before the usual sampling (default
            ``max(2048, num_points)``).
        **kwargs: :class:`PointCloudDataset` options (``train``, ``sampling``,
            ``transform``, ``normalize`` ...).
    """

    def __init__(
        self,
        split: str,
        num_points: int,
        num_samples: int | None = None,
        scan: bool = False,
        seed: int = 0,
        raw_points: int | None = None,
        **kwargs,
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {list(_SPLIT_CODES)}, got {split!r}")
        kwargs.setdefault("train", split in ("train", "pretrain"))
        super().__init__(num_points, seed=seed, **kwargs)
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.split, self.scan = split, bool(scan)
        self.num_samples = int(num_samples) if num_samples is not None else DEFAULT_SIZES[split]
        self.raw_points = int(raw_points) if raw_points is not None else max(2048, self.num_points)
        if self.raw_points < self.num_points:
            raise ValueError(f"raw_points ({self.raw_points}) must be >= num_points ({self.num_points})")
        self.labeled = split != "pretrain"
        self.class_names = list(CLASSES) if self.labeled else []
        self.num_classes = len(CLASSES) if self.labeled else 0

    def __len__(self) -> int:
        return self.num_samples

    def _label(self, index: int) -> int:
        return index % len(CLASSES) if self.labeled else -1

    def class_of(self, index: int) -> int:
        """The generating class of item ``index`` (also for the unlabeled pool)."""
        if self.labeled:
            return index % len(CLASSES)
        return _shape_label(self.split, index, _shape_rng(self.seed, self.split, self.scan, index))

    def _source(self, index: int) -> str:
        return f"synthetic{'-scan' if self.scan else ''}[{self.split}][{index}]"

    def _load(self, index: int) -> np.ndarray:
        rng = _shape_rng(self.seed, self.split, self.scan, index)
        label = _shape_label(self.split, index, rng)
        return generate_shape(label, self.raw_points, rng, scan=self.scan)


class SyntheticParts(PointCloudDataset):
    """Part-labelled procedural shapes, in the form of :class:`~act3d.data.datasets.ShapeNetPart`.

    Items: ``{"points": (N, 3) float32 (normalised to the unit sphere), "label": () int64
    class, "seg": (N,) int64 global part id}``; :data:`NUM_PARTS` parts over
    ``len(CLASSES)`` classes (:data:`PART_NAMES`, :data:`CATEGORY_PARTS`).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; each has its own seed stream (train and
            test share :class:`SyntheticShapes`' streams, so their geometry is the same).
            Balanced: item ``i`` is class ``i % len(CLASSES)``.
        num_points: points per sample.
        num_samples: dataset length (default 100 / 15 / 30 shapes per class).
        seed: base seed; item ``i`` is a function of ``(seed, split, i)`` only.
        raw_points: surface points generated per shape before sampling (default
            ``max(2048, num_points)``).
        **kwargs: :class:`PointCloudDataset` options; the default sampling is ``"random"``
            (a random subset, deterministic per item outside training), as ShapeNetPart.
    """

    _seg = True
    _cache_raw = True
    num_parts = NUM_PARTS

    def __init__(
        self,
        split: str,
        num_points: int,
        num_samples: int | None = None,
        seed: int = 0,
        raw_points: int | None = None,
        **kwargs,
    ) -> None:
        if split not in _PART_SPLIT_CODES:
            raise ValueError(f"split must be one of {list(PART_SPLITS)}, got {split!r}")
        kwargs.setdefault("train", split == "train")
        kwargs.setdefault("sampling", "random")
        super().__init__(num_points, seed=seed, **kwargs)
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.split = split
        self.num_samples = int(num_samples) if num_samples is not None else _PART_DEFAULT_SIZES[split]
        self.raw_points = int(raw_points) if raw_points is not None else max(2048, self.num_points)
        if self.raw_points < self.num_points:
            raise ValueError(f"raw_points ({self.raw_points}) must be >= num_points ({self.num_points})")
        self.categories = list(CLASSES)
        self.class_names = list(CLASSES)
        self.num_classes = len(CLASSES)
        self.category_parts = {c: list(p) for c, p in zip(CLASSES, CATEGORY_PARTS)}
        self.part_names = list(PART_LABELS)

    def __len__(self) -> int:
        return self.num_samples

    def _label(self, index: int) -> int:
        return index % len(CLASSES)

    def _source(self, index: int) -> str:
        return f"synthetic-parts[{self.split}][{index}]"

    def _cache_key(self, index: int) -> str | None:
        return f"synthetic-parts|v1|seed={self.seed}|{self.split}|{index}|raw={self.raw_points}"

    def _load(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _PART_SPLIT_CODES[self.split], 0, int(index)])
        points, parts = generate_part_shape(self._label(index), self.raw_points, rng)
        return np.concatenate([points, parts[:, None].astype(np.float32)], axis=1)
