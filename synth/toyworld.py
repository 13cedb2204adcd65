"""A closed-loop tabletop toy world: the synthetic robot's table, now an environment a VLA can be rolled out in.

The scene is drawn by the same renderer as the synthetic robot frames and the pool's tabletop pictures
(``synth.tabletop``), from the robot rig's camera. A parallel gripper picks one of 3-4 cubes and spheres; which
one is said in words that need visual-spatial knowledge: its colour and shape ("pick up the red cube"), or where
it stands relative to another object ("pick up the object left of the blue sphere", "... behind the ..."). The
relations are those of the pool's spatial QA (``synth.tabletop.relation_target``, ``synth.scenes.draw_spatial``):
*left of X* is the nearest object on X's left, *behind X* the nearest one farther from the camera — so a web
source of such QA carries exactly the knowledge the tasks need, in its own style.

Actions and states have the synthetic robot's layout (``synth.lerobot.ACTION_NAMES`` / ``STATE_NAMES``): the
action is the pose the gripper should move to (reached within ``MAX_MOVE`` per step) and a gripper command
(1 = close). Closing near an object grasps it; an object lifted to ``LIFT`` ends the episode: a success if it is
the target, a failure otherwise. A scripted expert with the true positions solves every task; its episodes are
written as a LeRobot v3 dataset by the product's writer.

    env = TabletopEnv(size=64)
    obs = env.reset(seed=3)
    while not env.done:
        obs = env.step(expert_action(env))
    assert env.success
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from core.settings import StorageConfig
from synth.lerobot import ACTION_NAMES, Episode, write_lerobot_dataset
from synth.robot import ROBOT_CAMERA
from synth.tabletop import (
    COLORS,
    SIDE_WORDS,
    SIDES,
    SIZES,
    Gripper,
    Obj,
    place_objects,
    random_camera,
    random_look,
    relation_target,
    render_tabletop,
)

RELATIONS = ("name", *SIDES)
SHAPES = ("cube", "sphere")  # graspable shapes (a bowl is too wide for the fingers)
MAX_MOVE = 0.12  # the farthest the gripper travels in one step (table units)
GRASP_RADIUS = 0.07  # horizontal distance within which closing the fingers grasps an object
GRASP_HEIGHT = 0.12  # the fingers must be this low (bottom of the object at 0) to grasp it
HOVER = 0.35  # the expert's travel height
LIFT = 0.25  # an object held this high is picked: the episode ends
MAX_STEPS = 24


@dataclass(frozen=True)
class Observation:
    """What a policy sees: the camera image (uint8 H x W x 3), the instruction, the proprioceptive state."""

    image: np.ndarray
    instruction: str
    state: np.ndarray


def instruction_for(relation: str, target: Obj, anchor: Obj | None) -> str:
    if relation == "name":
        return f"pick up the {target.name}"
    return f"pick up the object {SIDE_WORDS[relation]} the {anchor.name}"  # type: ignore[union-attr]


def _task(rng: np.random.Generator, objects: list[Obj], relations: tuple[str, ...]) -> tuple[int, str]:
    """A target index and its instruction; a relation the layout cannot express falls back to the next one."""
    for relation in rng.permutation(list(relations)):
        if relation == "name":
            target = int(rng.integers(len(objects)))
            return target, instruction_for("name", objects[target], None)
        for a in rng.permutation(len(objects)):
            found = relation_target(objects, objects[a], str(relation))
            if found is not None:
                return objects.index(found), instruction_for(str(relation), found, objects[a])
    target = int(rng.integers(len(objects)))  # no relation fits (rare): name the object
    return target, instruction_for("name", objects[target], None)


class TabletopEnv:
    """``reset(seed)``, ``step(action)``, ``success`` and ``done``: a task and its scene are a function of the seed."""

    action_dim = len(ACTION_NAMES)

    def __init__(self, *, size: int = 64, max_steps: int = MAX_STEPS, relations: tuple[str, ...] = RELATIONS,
                 objects: tuple[int, int] = (3, 4)) -> None:
        if bad := set(relations) - set(RELATIONS):
            raise ValueError(f"relations {sorted(bad)} unknown; expected some of {RELATIONS}")
        self.size, self.max_steps, self.relations, self.n_objects = size, max_steps, relations, objects
        self.objects: list[Obj] = []

    def reset(self, seed: int) -> Observation:
        """A new scene, task and start pose from ``seed`` alone; returns the first observation."""
        self.rng = np.random.default_rng([seed, 0x70F])
        self.camera = random_camera(self.rng, ROBOT_CAMERA, jitter=0.2)
        self.look = random_look(self.rng, jitter=0.3)
        n = int(self.rng.integers(self.n_objects[0], self.n_objects[1] + 1))
        names = [(c, s) for c in COLORS for s in SHAPES]
        self.objects = place_objects(self.rng, [names[i] for i in self.rng.permutation(len(names))[:n]])
        self.target, self.instruction = _task(self.rng, self.objects, self.relations)
        self.pose = np.array([self.rng.uniform(0.2, 0.8), self.rng.uniform(0.05, 0.3), 0.5])
        self.closed, self.held, self.steps = False, None, 0
        self.lifted: int | None = None
        return self.observe()

    @property
    def success(self) -> bool:
        """The target object was picked (lifted to ``LIFT``)."""
        return self.lifted == self.target

    @property
    def done(self) -> bool:
        return self.lifted is not None or self.steps >= self.max_steps

    def render(self) -> np.ndarray:
        g = Gripper(u=float(self.pose[0]), v=float(self.pose[1]), z=float(self.pose[2]),
                    opening=0.0 if self.closed else 1.0)
        return np.asarray(render_tabletop(self.size, self.camera, self.look, self.objects, self.rng, g))

    def state(self) -> np.ndarray:
        """x, y, z, roll, pitch, yaw, two finger positions (``synth.lerobot.STATE_NAMES``)."""
        finger = 0.0 if self.closed else 0.04
        return np.array([*self.pose, 0.0, 0.0, 0.0, finger, finger], np.float32)

    def observe(self) -> Observation:
        return Observation(image=self.render(), instruction=self.instruction, state=self.state())

    def step(self, action: np.ndarray) -> Observation:
        """Move toward the action's pose (at most ``MAX_MOVE``), then close or open the fingers."""
        if self.done:
            raise RuntimeError("step() after the episode ended: call reset()")
        action = np.asarray(action, np.float64)
        if action.shape != (len(ACTION_NAMES),) or not np.isfinite(action).all():
            raise ValueError(f"action must be {len(ACTION_NAMES)} finite numbers ({ACTION_NAMES}), got {action}")
        goal = np.clip(action[:3], [-0.2, -0.2, 0.0], [1.2, 1.2, 0.8])
        delta = goal - self.pose
        dist = float(np.linalg.norm(delta))
        self.pose = goal if dist <= MAX_MOVE else self.pose + delta * (MAX_MOVE / dist)
        close = bool(action[6] > 0.5)
        if close and not self.closed:
            self.held = self._graspable()
        elif not close and self.held is not None:
            self.objects[self.held].z = 0.0  # released: it drops onto the table where it is
            self.held = None
        self.closed = close
        if self.held is not None:
            o = self.objects[self.held]
            o.u, o.v, o.z = float(self.pose[0]), float(self.pose[1]), max(0.0, float(self.pose[2]) - SIZES[o.shape] / 2)
            if self.pose[2] >= LIFT:
                self.lifted = self.held
        self.steps += 1
        return self.observe()

    def _graspable(self) -> int | None:
        """The object between the fingers, if they close low enough near one."""
        if self.pose[2] > GRASP_HEIGHT:
            return None
        near = [(float(np.hypot(o.u - self.pose[0], o.v - self.pose[1])), i) for i, o in enumerate(self.objects)]
        dist, i = min(near)
        return i if dist <= GRASP_RADIUS else None


def expert_action(env: TabletopEnv) -> np.ndarray:
    """The scripted expert's next action, from the true positions: above the target, down, close, lift."""
    o = env.objects[env.target]
    grasp_z = SIZES[o.shape] / 2
    if env.held == env.target:
        goal, close = (o.u, o.v, HOVER), 1.0
    elif np.hypot(o.u - env.pose[0], o.v - env.pose[1]) > 0.01:
        goal, close = (o.u, o.v, HOVER), 0.0
    elif env.pose[2] > grasp_z + 0.01:
        goal, close = (o.u, o.v, grasp_z), 0.0
    else:
        goal, close = (o.u, o.v, grasp_z), 1.0
    goal = np.asarray(goal, np.float64)
    delta = goal - env.pose
    dist = float(np.linalg.norm(delta))
    step = goal if dist <= MAX_MOVE else env.pose + delta * (MAX_MOVE / dist)  # a pose it can reach this step
    return np.array([*step, 0.0, 0.0, 0.0, close], np.float32)


def random_action(env: TabletopEnv, rng: np.random.Generator) -> np.ndarray:
    """A random policy's action: a pose anywhere over the table and a random gripper command."""
    return np.array([rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 0.5), 0, 0, 0, rng.random() < 0.5],
                    np.float32)


def expert_episode(seed: int, *, size: int = 64, max_steps: int = MAX_STEPS,
                   relations: tuple[str, ...] = RELATIONS) -> Episode:
    """One expert episode as recorded data: the frame seen before each action, the state and the action."""
    env = TabletopEnv(size=size, max_steps=max_steps, relations=relations)
    obs = env.reset(seed)
    frames, states, actions = [], [], []
    while not env.done:
        action = expert_action(env)
        frames.append(obs.image)
        states.append(obs.state)
        actions.append(action)
        obs = env.step(action)
    if not env.success:
        raise RuntimeError(f"the expert failed toy-world seed {seed} ({env.instruction!r}): a bug in the world")
    return Episode(task=env.instruction, frames=frames, state=np.stack(states), action=np.stack(actions))


def write_toyworld_dataset(root_uri: str, seeds: Iterable[int], *, size: int = 64, episodes_per_file: int = 4,
                           storage: StorageConfig | None = None) -> dict:
    """The expert's episodes for ``seeds`` as a LeRobot v3 dataset (images in Parquet); returns ``info.json``."""
    return write_lerobot_dataset(root_uri, (expert_episode(s, size=size) for s in seeds), fps=10,
                                 episodes_per_file=episodes_per_file, robot_type="toyworld_arm", storage=storage)
