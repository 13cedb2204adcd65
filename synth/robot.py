"""Scripted robot episodes: a gripper picks one object and puts it somewhere, seen by a fixed table camera.

The frames come from the same tabletop renderer as the pool's tabletop source (with a robot rig's camera and
milder lighting jitter), so robot data really sits next to that source, as real robot data sits next to
tabletop web photos. The trajectory is piecewise linear through fixed waypoints; the state is the gripper pose
and finger positions, the action the next pose plus a binary gripper command (1 = close).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from synth.lerobot import Episode
from synth.scenes import tabletop_text
from synth.tabletop import (
    BOWL_HEIGHT,
    COLORS,
    SIZES,
    Camera,
    Gripper,
    place_objects,
    random_camera,
    random_look,
    render_tabletop,
)

ROBOT_TASKS = ("pick_place", "stack_blocks")
# How the robot's instructions are worded: the imperative of real robot datasets ("pick up the red cube and place
# it in the bowl"), a control-log style unlike any web text (the shortcut preset), or the pool's own caption
# format (texts harmonised with the pool: the matched-text control).
Wording = Literal["instruction", "log", "caption"]
WORDINGS: tuple[str, ...] = ("instruction", "log", "caption")
ROBOT_CAMERA = Camera(far=0.3, near=1.0, depth=0.9, width=1.15, cx=0.5)
_CUBE = SIZES["cube"]
_HOVER = 0.35  # carrying height
# Waypoint times (fraction of the episode): start, above object, at object, grasped, lifted, above place,
# at place, released.
_TIMES = np.array([0.0, 0.25, 0.4, 0.5, 0.65, 0.8, 0.9, 1.0])
_OPENING = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def word_instruction(task: str, color: str, place: str, wording: Wording) -> str:
    """The instruction to move the ``color`` cube onto ``place`` (a colour for stack_blocks, "bowl" otherwise)."""
    if wording == "log":
        return f"[{task}] grasp={color}_cube target={place}{'_block' if task == 'stack_blocks' else ''} ok"
    if task == "pick_place":
        return f"pick up the {color} cube and place it in the bowl"
    return f"stack the {color} block on the {place} block"


def _layout(task: str, rng: np.random.Generator) -> tuple[list, int, tuple[float, float, float], str]:
    """Objects, the index of the one to move, the place point (u, v, bottom z) and where it goes (a word)."""
    colors = [str(c) for c in rng.permutation(list(COLORS))]
    if task == "pick_place":
        names = [(colors[0], "bowl")] + [(c, "cube") for c in colors[1 : 1 + int(rng.integers(2, 4))]]
        objects = place_objects(rng, names)
        target = int(rng.integers(1, len(objects)))
        bowl = objects[0]
        return objects, target, (bowl.u, bowl.v, 0.3 * BOWL_HEIGHT), "bowl"
    if task == "stack_blocks":
        objects = place_objects(rng, [(c, "cube") for c in colors[:3]])
        target, base = (int(i) for i in rng.permutation(3)[:2])
        return objects, target, (objects[base].u, objects[base].v, _CUBE), objects[base].color
    raise ValueError(f"unknown robot task {task!r}; expected one of {ROBOT_TASKS}")


def scripted_episode(task: str, rng: np.random.Generator, *, size: int, frames: int,
                     wording: Wording = "instruction") -> Episode:
    """Render one episode of ``task`` ("pick_place" or "stack_blocks") with ``frames`` steps."""
    camera = random_camera(rng, ROBOT_CAMERA, jitter=0.2)  # the rig is re-mounted a little between episodes
    look = random_look(rng, wood=task == "stack_blocks", jitter=0.3)
    objects, target, (pu, pv, pz), place = _layout(task, rng)
    obj = objects[target]
    if wording == "caption":  # the first frame's objects, in the pool's caption format
        instruction = tabletop_text(rng, objects, "wooden" if look.wood else "grey", qa=False)
    else:
        instruction = word_instruction(task, obj.color, place, wording)
    start = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.05, 0.3)), 0.5)
    grasp_z, place_z = _CUBE / 2, pz + _CUBE / 2
    waypoints = np.array(
        [
            start,
            (obj.u, obj.v, _HOVER),
            (obj.u, obj.v, grasp_z),
            (obj.u, obj.v, grasp_z),
            (obj.u, obj.v, _HOVER),
            (pu, pv, _HOVER),
            (pu, pv, place_z),
            (pu, pv, place_z),
        ]
    )
    t = np.linspace(0.0, 1.0, frames)
    pose = np.stack([np.interp(t, _TIMES, waypoints[:, k]) for k in range(3)], axis=1)
    pose += rng.normal(0.0, 0.002, pose.shape)  # a real controller never tracks exactly
    opening = np.interp(t, _TIMES, _OPENING)
    closed = (t >= _TIMES[2]) & (t < _TIMES[6])  # command: close on arrival, open again at the place point
    held = (t >= _TIMES[3]) & (t < _TIMES[7])  # the object moves with the fingers once they are shut
    yaw = float(rng.normal(0.0, 0.05))

    images = []
    for i in range(frames):
        u, v, z = pose[i]
        if held[i]:
            obj.u, obj.v, obj.z = u, v, max(0.0, z - _CUBE / 2)
        elif t[i] >= _TIMES[7]:
            obj.u, obj.v, obj.z = pu, pv, pz
        gripper = Gripper(u=u, v=v, z=z, opening=float(opening[i]))
        images.append(np.asarray(render_tabletop(size, camera, look, objects, rng, gripper)))

    zeros = np.zeros(frames)
    fingers = 0.04 * opening
    state = np.stack([*pose.T, zeros, zeros, np.full(frames, yaw), fingers, fingers], axis=1)
    next_pose = np.concatenate([pose[1:], pose[-1:]])  # the action is where the arm goes next
    action = np.stack([*next_pose.T, zeros, zeros, np.full(frames, yaw), closed.astype(float)], axis=1)
    return Episode(
        task=instruction, frames=images, state=state.astype(np.float32), action=action.astype(np.float32)
    )
