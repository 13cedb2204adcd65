"""Tabletop scenes: one renderer for the pool's tabletop pictures and for the robot cameras.

Sharing the drawing code is the point: robot frames must sit close to the pool's tabletop source in any
feature space (and far from charts and documents), so that proximity-based selection has a real signal.
Geometry: a table plane with coordinates ``u`` (left→right, 0..1) and ``v`` (near→far, 0..1), heights ``z``
in the same units, seen by a pinhole camera (image rows are linear in 1/depth, like a real ground plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

COLORS: dict[str, RGB] = {
    "red": (200, 45, 40),
    "green": (50, 160, 70),
    "blue": (45, 80, 200),
    "yellow": (235, 200, 50),
    "orange": (240, 130, 30),
    "purple": (130, 60, 170),
}
SHAPES = ("cube", "sphere", "bowl")
SIZES = {"cube": 0.13, "sphere": 0.13, "bowl": 0.22}  # footprint in table units
BOWL_HEIGHT = 0.07


@dataclass(frozen=True)
class Camera:
    """Where the table lands in the image (fractions of the image size)."""

    far: float = 0.30  # image row of the table's far edge
    near: float = 1.05  # image row of the near edge (below the frame when > 1)
    depth: float = 0.8  # perspective strength: the far edge looks 1/(1+depth) as wide as the near edge
    width: float = 1.1  # width of one table unit at the near edge, in image widths
    cx: float = 0.5  # image column of the table's centre line


@dataclass(frozen=True)
class Look:
    """Materials and lighting."""

    wall: RGB
    table: RGB
    wood: bool
    gain: tuple[float, float, float]  # per-channel brightness (lighting colour and strength)
    noise: float  # sensor noise std in 8-bit levels


@dataclass
class Obj:
    """One object on (or above) the table; ``z`` is the height of its bottom."""

    shape: str
    color: str
    u: float
    v: float
    z: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Gripper:
    """A parallel gripper; (u, v, z) is the point between its fingertips, ``opening`` in [0, 1]."""

    u: float
    v: float
    z: float
    opening: float


DEFAULT_CAMERA = Camera()
SIDES = ("left", "right", "behind", "front")  # spatial relations, as the toy world's tasks and spatial QA use them
SIDE_WORDS = {"left": "left of", "right": "right of", "behind": "behind", "front": "in front of"}
_MARGIN = 0.05  # an object must stand at least this far to a side to count as "left of" (as in the pool's QA)


def relation_target(objects: list[Obj], anchor: Obj, relation: str) -> Obj | None:
    """The object ``relation`` of ``anchor`` (the nearest one on that side), or None when there is none."""
    others = [o for o in objects if o is not anchor]
    if relation == "left":
        side = [o for o in others if o.u < anchor.u - _MARGIN]
        return max(side, key=lambda o: o.u) if side else None
    if relation == "right":
        side = [o for o in others if o.u > anchor.u + _MARGIN]
        return min(side, key=lambda o: o.u) if side else None
    if relation == "behind":
        side = [o for o in others if o.v > anchor.v + _MARGIN]
        return min(side, key=lambda o: o.v) if side else None
    if relation == "front":
        side = [o for o in others if o.v < anchor.v - _MARGIN]
        return max(side, key=lambda o: o.v) if side else None
    raise ValueError(f"unknown relation {relation!r}; expected one of {SIDES}")


def random_camera(rng: np.random.Generator, base: Camera = DEFAULT_CAMERA, jitter: float = 1.0) -> Camera:
    """A camera near ``base``; jitter 1.0 spans the pool's variety, ~0.2 a robot rig's re-mounts."""
    j = lambda scale: float(rng.uniform(-scale, scale)) * jitter  # noqa: E731
    return Camera(
        far=base.far + j(0.1),
        near=base.near + j(0.12),
        depth=max(0.2, base.depth + j(0.4)),
        width=max(0.6, base.width + j(0.3)),
        cx=base.cx + j(0.12),
    )


def random_look(rng: np.random.Generator, *, wood: bool | None = None, jitter: float = 1.0) -> Look:
    """Random wall/table colours and lighting; ``wood`` fixes the table material."""
    wood = bool(rng.random() < 0.5) if wood is None else wood
    base_table = (150, 105, 65) if wood else (135, 135, 140)
    table = tuple(int(np.clip(c + rng.integers(-25, 26) * jitter, 0, 255)) for c in base_table)
    wall = tuple(int(c) for c in np.clip(rng.integers(150, 235) + rng.integers(-20, 21, 3), 0, 255))
    light = rng.uniform(0.8, 1.15)
    tint = 1.0 + rng.uniform(-0.07, 0.07, 3) * jitter
    gain = tuple(float(g) for g in (1.0 + (light - 1.0) * jitter) * tint)
    return Look(wall=wall, table=table, wood=wood, gain=gain, noise=float(rng.uniform(2, 6)))


def random_objects(rng: np.random.Generator, n: int, shapes: tuple[str, ...] = SHAPES) -> list[Obj]:
    """``n`` objects with distinct (colour, shape) names, spread out so that they do not overlap."""
    names = [(c, s) for c in COLORS for s in shapes]
    return place_objects(rng, [names[i] for i in rng.permutation(len(names))[:n]])


def place_objects(rng: np.random.Generator, names: list[tuple[str, str]]) -> list[Obj]:
    """Objects of the given (colour, shape), at random spots that keep them apart."""
    objects: list[Obj] = []
    for color, shape in names:
        for _ in range(30):  # rejection sampling; after a few misses an overlap is acceptable
            u, v = float(rng.uniform(0.12, 0.88)), float(rng.uniform(0.1, 0.85))
            if all(np.hypot(u - o.u, v - o.v) > 0.6 * (SIZES[shape] + SIZES[o.shape]) for o in objects):
                break
        objects.append(Obj(shape=shape, color=color, u=u, v=v))
    return objects


class _View:
    """Projects table coordinates to pixels for one camera and image size."""

    def __init__(self, camera: Camera, size: int):
        self.c, self.size = camera, size
        self.s_far = 1.0 / (1.0 + camera.depth)

    def __call__(self, u: float, v: float, z: float = 0.0) -> tuple[float, float, float]:
        """(x, y, pixels per table unit) of a point."""
        s = 1.0 / (1.0 + self.c.depth * v)
        t = (s - self.s_far) / (1.0 - self.s_far)  # 1 at the near edge, 0 at the far edge
        ppu = self.size * self.c.width * s
        x = self.size * (self.c.cx + (u - 0.5) * self.c.width * s)
        y = self.size * (self.c.far + (self.c.near - self.c.far) * t) - 0.9 * z * ppu
        return x, y, ppu

    def poly(self, pts: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
        return [self(*p)[:2] for p in pts]


def _shade(color: RGB, f: float) -> RGB:
    return tuple(min(255, int(c * f)) for c in color)


def _draw_table(d: ImageDraw.ImageDraw, view: _View, look: Look) -> None:
    top = view.poly([(-0.4, 0, 0), (1.4, 0, 0), (1.4, 1, 0), (-0.4, 1, 0)])
    d.polygon(top, fill=look.table)
    front = [
        top[0],
        top[1],
        (top[1][0], top[1][1] + view.size * 0.06),
        (top[0][0], top[0][1] + view.size * 0.06),
    ]
    d.polygon(front, fill=_shade(look.table, 0.6))
    if look.wood:  # grain: darker lines running along the table
        for v in (0.12, 0.27, 0.45, 0.61, 0.8, 0.93):
            d.line(view.poly([(-0.4, v, 0), (1.4, v, 0)]), fill=_shade(look.table, 0.85), width=1)


def _draw_shadow(d: ImageDraw.ImageDraw, view: _View, u: float, v: float, radius: float, look: Look) -> None:
    x, y, ppu = view(u + 0.03, v + 0.02)
    r = radius * ppu
    d.ellipse([x - r, y - 0.4 * r, x + r, y + 0.4 * r], fill=_shade(look.table, 0.72))


def _draw_cube(d: ImageDraw.ImageDraw, view: _View, o: Obj) -> None:
    h, z0, z1, rgb = SIZES["cube"] / 2, o.z, o.z + SIZES["cube"], COLORS[o.color]
    u0, u1, v0, v1 = o.u - h, o.u + h, o.v - h, o.v + h
    su = u1 if o.u < 0.5 else u0  # the side facing the camera's centre line is the visible one
    d.polygon(view.poly([(su, v0, z0), (su, v1, z0), (su, v1, z1), (su, v0, z1)]), fill=_shade(rgb, 0.62))
    d.polygon(view.poly([(u0, v0, z0), (u1, v0, z0), (u1, v0, z1), (u0, v0, z1)]), fill=_shade(rgb, 0.82))
    d.polygon(view.poly([(u0, v0, z1), (u1, v0, z1), (u1, v1, z1), (u0, v1, z1)]), fill=_shade(rgb, 1.15))


def _draw_sphere(d: ImageDraw.ImageDraw, view: _View, o: Obj) -> None:
    rad = SIZES["sphere"] / 2
    x, y, ppu = view(o.u, o.v, o.z + rad)
    r = rad * ppu
    d.ellipse([x - r, y - r, x + r, y + r], fill=COLORS[o.color])
    hx, hy, hr = x - 0.35 * r, y - 0.35 * r, 0.3 * r
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=_shade(COLORS[o.color], 1.4))


def _draw_bowl(d: ImageDraw.ImageDraw, view: _View, o: Obj) -> None:
    rad, rgb = SIZES["bowl"] / 2, COLORS[o.color]
    xr, yr, ppu = view(o.u, o.v, o.z + BOWL_HEIGHT)
    xb, yb, _ = view(o.u, o.v, o.z)
    r, sq = rad * ppu, 0.4  # sq: how flat the rim ellipse looks from this camera
    d.ellipse([xb - 0.6 * r, yb - 0.25 * r, xb + 0.6 * r, yb + 0.25 * r], fill=_shade(rgb, 0.6))
    d.polygon([(xr - r, yr), (xr + r, yr), (xb + 0.6 * r, yb), (xb - 0.6 * r, yb)], fill=_shade(rgb, 0.75))
    d.ellipse([xr - r, yr - sq * r, xr + r, yr + sq * r], fill=_shade(rgb, 1.1))
    d.ellipse([xr - 0.8 * r, yr - 0.8 * sq * r, xr + 0.8 * r, yr + 0.8 * sq * r], fill=_shade(rgb, 0.5))


def _draw_gripper(d: ImageDraw.ImageDraw, view: _View, g: Gripper) -> None:
    x, y, ppu = view(g.u, g.v, g.z)
    finger, half_gap, bar = 0.12 * ppu, (0.03 + 0.06 * g.opening) * ppu, 0.11 * ppu
    fw = max(1.0, 0.025 * ppu)
    y_bar = y - finger
    d.line([(x, y_bar), (x + 0.05 * view.size, -1)], fill=(150, 150, 155), width=max(1, int(0.05 * ppu)))
    d.rectangle([x - bar, y_bar - fw, x + bar, y_bar + fw], fill=(70, 70, 75))
    for sign in (-1, 1):
        fx = x + sign * half_gap
        d.rectangle([fx - fw, y_bar, fx + fw, y], fill=(35, 35, 40))


_DRAW = {"cube": _draw_cube, "sphere": _draw_sphere, "bowl": _draw_bowl}


def render_tabletop(
    size: int,
    camera: Camera,
    look: Look,
    objects: list[Obj],
    rng: np.random.Generator,
    gripper: Gripper | None = None,
) -> Image.Image:
    """Draw the table, its objects (far to near, lower first), the gripper, then apply lighting and noise."""
    img = Image.new("RGB", (size, size), look.wall)
    d = ImageDraw.Draw(img)
    view = _View(camera, size)
    _draw_table(d, view, look)
    for o in objects:
        if o.z < 0.02:  # only objects resting on the table cast a contact shadow
            _draw_shadow(d, view, o.u, o.v, SIZES[o.shape] * 0.6, look)
    if gripper is not None:
        _draw_shadow(d, view, gripper.u, gripper.v, 0.08, look)
    for o in sorted(objects, key=lambda o: (-o.v, o.z)):
        _DRAW[o.shape](d, view, o)
    if gripper is not None:
        _draw_gripper(d, view, gripper)
    return apply_light(img, look.gain, look.noise, rng)


def apply_light(
    img: Image.Image, gain: tuple[float, float, float], noise: float, rng: np.random.Generator
) -> Image.Image:
    """Scale the colour channels and add sensor noise (so no two renders are pixel-identical)."""
    arr = np.asarray(img, dtype=np.float32) * np.asarray(gain, dtype=np.float32)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
