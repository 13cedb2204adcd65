"""Scene kinds of the synthetic pool: one drawing function per kind, each returning (image, text).

The kinds span the paper's situation: ``tabletop`` looks like robot data, ``spatial`` asks where objects stand
relative to each other (the knowledge the toy world's tasks need, in a VQA style), ``indoor`` clutter is half-way,
``photo`` is generic web imagery, ``chart`` and ``document`` are far from any robot camera. Every function
draws with Pillow at the target size from the given numpy generator alone: a scene is a function of the rng.
Texts are captions (``qa=False``, like alt-text pools) or question/answer pairs (``qa=True``, like VQA pools).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from synth.pages import draw_chart, draw_document
from synth.tabletop import (
    COLORS,
    SIDE_WORDS,
    SIDES,
    Obj,
    apply_light,
    random_camera,
    random_look,
    random_objects,
    relation_target,
    render_tabletop,
)

ALIGNMENT: dict[str, float] = {"tabletop": 1.0, "spatial": 0.8, "indoor": 0.5, "photo": 0.1, "chart": 0.0,
                               "document": 0.0}
KINDS = tuple(ALIGNMENT)
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

Scene = tuple[Image.Image, str]


def stable_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """A generator determined by (seed, name, index) alone: crc32, not hash(), which is salted per process."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), index])


def _pick(rng: np.random.Generator, options: list | tuple):
    return options[int(rng.integers(len(options)))]


def _listing(names: list[str]) -> str:
    """'a x', 'a x and a y', 'a x, a y and a z'."""
    items = [f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plural(n: int, noun: str) -> str:
    return f"{NUMBERS[n] if n < len(NUMBERS) else n} {noun}{'' if n == 1 else 's'}"


# --- tabletop -----------------------------------------------------------------------------------------------


def tabletop_text(rng: np.random.Generator, objects: list[Obj], table: str, *, qa: bool) -> str:
    """A caption listing the objects, or a spatial question answered from their positions."""
    if not qa:
        return f"a photo of {_listing([o.name for o in objects])} on a {table} table"
    target = _pick(rng, objects)
    left = [o for o in objects if o.u < target.u - 0.05]
    right = [o for o in objects if o.u > target.u + 0.05]
    question = int(rng.integers(4))
    if question == 0 and (left or right):
        if left:  # the nearest object on that side answers "what is left of X"
            return f"Q: What is left of the {target.name}? A: the {max(left, key=lambda o: o.u).name}."
        return f"Q: What is right of the {target.name}? A: the {min(right, key=lambda o: o.u).name}."
    if question == 1:
        shape = target.shape
        n = sum(o.shape == shape for o in objects)
        return f"Q: How many {shape}s are on the table? A: {n}."
    if question == 2:
        return f"Q: Which object is closest to the camera? A: the {min(objects, key=lambda o: o.v).name}."
    return f"Q: What color is the {target.shape} on the table? A: {target.color}."


def draw_tabletop(rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """A table in perspective with 2-5 cubes, spheres and bowls (the robot camera's world)."""
    camera, look = random_camera(rng), random_look(rng)
    objects = random_objects(rng, int(rng.integers(2, 6)))
    image = render_tabletop(size, camera, look, objects, rng)
    return image, tabletop_text(rng, objects, "wooden" if look.wood else "grey", qa=qa)


def draw_spatial(rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """Objects on a table from a random camera (no robot, no gripper), with a question on where one stands
    relative to another, answered by the toy world's definitions (``relation_target``); a caption says the same."""
    camera, look = random_camera(rng), random_look(rng)
    objects = random_objects(rng, int(rng.integers(3, 6)))
    image = render_tabletop(size, camera, look, objects, rng)
    for side in rng.permutation(list(SIDES)):
        for a in rng.permutation(len(objects)):
            found = relation_target(objects, objects[a], str(side))
            if found is None:
                continue
            words, anchor = SIDE_WORDS[str(side)], objects[a].name
            if qa:
                return image, f"Q: Which object is {words} the {anchor}? A: the {found.name}."
            return image, f"the {found.name} is {words} the {anchor}"
    return image, tabletop_text(rng, objects, "wooden" if look.wood else "grey", qa=qa)


# --- indoor -------------------------------------------------------------------------------------------------


def draw_indoor(rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """A room seen from the front: wall, floor, maybe a window and shelves, a counter or desk with clutter."""
    s = size
    room = _pick(rng, ("kitchen", "pantry", "living room", "office"))
    wall = tuple(int(c) for c in rng.integers(140, 230, 3))
    img = Image.new("RGB", (s, s), wall)
    d = ImageDraw.Draw(img)
    floor_y = s * rng.uniform(0.68, 0.8)
    d.rectangle([0, floor_y, s, s], fill=tuple(int(c) for c in rng.integers(60, 140, 3)))
    for k in range(1, 4):  # floor boards converging to the centre
        d.line([(s * k / 4, floor_y), (s * (k / 4 - 0.5) * 2.2 + s / 2, s)], fill=(50, 45, 40))
    things: list[str] = []
    if rng.random() < 0.6:
        wx, wy = s * rng.uniform(0.05, 0.55), s * rng.uniform(0.05, 0.2)
        d.rectangle(
            [wx, wy, wx + s * 0.35, wy + s * 0.25], fill=(170, 210, 240), outline=(240, 240, 240), width=2
        )
        d.line([(wx + s * 0.175, wy), (wx + s * 0.175, wy + s * 0.25)], fill=(240, 240, 240), width=1)
        things.append("a window")
    n_jars = 0
    for _ in range(int(rng.integers(0, 3))):  # shelves with jars and boxes
        sy, sx = s * rng.uniform(0.12, 0.4), s * rng.uniform(0.0, 0.5)
        d.rectangle([sx, sy, sx + s * 0.45, sy + s * 0.025], fill=(110, 80, 50))
        for j in range(int(rng.integers(1, 5))):
            jx = sx + s * (0.02 + 0.1 * j)
            d.rectangle([jx, sy - s * 0.07, jx + s * 0.06, sy], fill=_pick(rng, list(COLORS.values())))
            n_jars += 1
    if n_jars:
        things.append(f"{_plural(n_jars, 'jar')} on the shelves")
    top_y = s * rng.uniform(0.48, 0.6)
    surface = "desk" if room == "office" else ("sofa" if room == "living room" else "counter")
    top_color = tuple(int(c) for c in rng.integers(90, 220, 3))
    d.rectangle([0, top_y, s, top_y + s * 0.04], fill=top_color)
    d.rectangle([0, top_y + s * 0.04, s, floor_y], fill=tuple(int(c * 0.7) for c in top_color))
    for k in range(1, 4):  # cabinet doors / cushions
        d.line([(s * k / 4, top_y + s * 0.06), (s * k / 4, floor_y - 2)], fill=(40, 40, 40))
    n_items = int(rng.integers(1, 5))
    item = {"kitchen": "bottle", "pantry": "can", "office": "book", "living room": "cushion"}[room]
    for i in range(n_items):
        ix = s * (0.08 + 0.85 * (i + rng.uniform(0.1, 0.6)) / n_items)
        h, w = s * rng.uniform(0.08, 0.18), s * rng.uniform(0.04, 0.08)
        d.rectangle([ix, top_y - h, ix + w, top_y], fill=_pick(rng, list(COLORS.values())))
        if item == "bottle":
            d.rectangle([ix + w * 0.3, top_y - h * 1.3, ix + w * 0.7, top_y - h], fill=(60, 90, 60))
    things.insert(0, f"{_plural(n_items, item)} on the {surface}")
    image = apply_light(img, tuple(rng.uniform(0.85, 1.1, 3)), float(rng.uniform(2, 6)), rng)
    if not qa:
        return image, f"a {room} with " + " and ".join(things)
    if rng.random() < 0.5:
        return image, f"Q: How many {item}s are on the {surface}? A: {n_items}."
    return image, f"Q: What room is this? A: a {room}."


# --- photo --------------------------------------------------------------------------------------------------

_SKIES = {  # name: (top colour, horizon colour)
    "clear": ((40, 90, 190), (150, 200, 240)),
    "cloudy": ((90, 130, 180), (190, 205, 220)),
    "sunset": ((70, 40, 110), (250, 150, 70)),
    "overcast": ((120, 120, 130), (190, 190, 195)),
}
_GROUNDS = {"grass": (70, 140, 60), "sand": (210, 190, 140), "snow": (235, 235, 240), "sea": (40, 90, 150)}


def draw_photo(rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """An outdoor photo: sky gradient, ground, sun or clouds, then hills, trees, buildings or people."""
    s = size
    sky = _pick(rng, tuple(_SKIES))
    ground = _pick(rng, tuple(_GROUNDS))
    horizon = int(s * rng.uniform(0.45, 0.7))
    top, bottom = (np.asarray(c, np.float32) for c in _SKIES[sky])
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    img = Image.fromarray(np.broadcast_to(top * (1 - t) + bottom * t, (s, s, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.rectangle([0, horizon, s, s], fill=_GROUNDS[ground])
    sky_things: list[str] = []
    if sky in ("clear", "sunset"):
        x, y, r = s * rng.uniform(0.1, 0.9), horizon * rng.uniform(0.2, 0.7), s * rng.uniform(0.05, 0.1)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 235, 150))
        sky_things.append("the sun")
    n_clouds = int(rng.integers(1, 4)) if sky == "cloudy" else 0
    for _ in range(n_clouds):
        x, y, r = s * rng.uniform(0.0, 0.9), horizon * rng.uniform(0.1, 0.6), s * rng.uniform(0.06, 0.12)
        for dx in (-r, 0.0, r):
            d.ellipse([x + dx - r, y - 0.6 * r, x + dx + r, y + 0.6 * r], fill=(245, 245, 250))
    if n_clouds:
        sky_things.append(_plural(n_clouds, "cloud"))
    subject = _pick(rng, ("hill", "tree", "building", "person"))
    n = int(rng.integers(1, 5))
    for i in range(n):
        x = s * (i + rng.uniform(0.2, 0.8)) / n
        if subject == "hill":
            w, h = s * rng.uniform(0.3, 0.6), s * rng.uniform(0.1, 0.25)
            d.ellipse([x - w, horizon - h, x + w, horizon + h], fill=(60 + 20 * i, 110 + 10 * i, 70))
        elif subject == "tree":
            h = s * rng.uniform(0.12, 0.25)
            d.rectangle(
                [x - s * 0.015, horizon - h * 0.5, x + s * 0.015, horizon + s * 0.03], fill=(90, 60, 30)
            )
            d.ellipse([x - h * 0.35, horizon - h * 1.1, x + h * 0.35, horizon - h * 0.35], fill=(30, 110, 40))
        elif subject == "building":
            w, h = s * rng.uniform(0.08, 0.18), s * rng.uniform(0.15, 0.4)
            d.rectangle(
                [x - w / 2, horizon - h, x + w / 2, horizon],
                fill=tuple(int(c) for c in rng.integers(90, 180, 3)),
            )
            for wy in np.arange(horizon - h + s * 0.03, horizon - s * 0.03, s * 0.06):
                d.line([(x - w / 3, wy), (x + w / 3, wy)], fill=(230, 220, 150))
        else:
            h, y = s * rng.uniform(0.12, 0.22), horizon + s * rng.uniform(0.02, 0.2)
            d.rectangle([x - h * 0.15, y - h * 0.7, x + h * 0.15, y], fill=_pick(rng, list(COLORS.values())))
            d.ellipse([x - h * 0.13, y - h, x + h * 0.13, y - h * 0.72], fill=(225, 180, 150))
    image = apply_light(img, tuple(rng.uniform(0.85, 1.1, 3)), float(rng.uniform(2, 6)), rng)
    things = _plural(n, subject).replace("persons", "people")
    where = {"grass": "on a meadow", "sand": "in the desert", "snow": "in the snow", "sea": "by the sea"}[
        ground
    ]
    if not qa:
        return image, f"a photo of {things} {where} under a {sky} sky"
    if sky_things and rng.random() < 0.4:
        return image, f"Q: What is in the sky? A: {' and '.join(sky_things)}."
    if rng.random() < 0.5:
        noun = "people" if subject == "person" else f"{subject}s"
        return image, f"Q: How many {noun} are there? A: {n}."
    return image, f"Q: What is the weather like? A: {sky}."


DRAW: dict[str, Callable[..., Scene]] = {
    "tabletop": draw_tabletop,
    "spatial": draw_spatial,
    "indoor": draw_indoor,
    "photo": draw_photo,
    "chart": draw_chart,
    "document": draw_document,
}


def draw_scene(kind: str, rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """Draw one scene of ``kind`` (a key of ``ALIGNMENT``)."""
    return DRAW[kind](rng, size, qa=qa)
