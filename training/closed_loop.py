"""Closed-loop evaluation: roll a VLA out in a world (the toy world, ``synth.toyworld.TabletopEnv``) over N seeded
episodes and report the success rate with a Wilson interval, plus a GIF of a few rollouts.

Held-out action loss says how close the VLA's actions are to the expert's on the expert's own frames; only a
rollout says whether the VLA, seeing the consequences of its own actions, picks the right object. The episodes'
seeds start at ``ClosedLoopConfig.seed``, far from the seeds of the expert's training episodes (0, 1, ...), so
no evaluated scene was seen in training. The Wilson interval holds its level for small N and rates near 0 or 1,
where the normal approximation gives bounds outside [0, 1].

The saved model is evaluated (reloaded from its URI), so what is registered is what was rolled out. The world is
passed in as a class (``World``), not imported: training/ does not depend on synth/; the flows name the world.
The evaluation is stored beside the model (``MODEL/closed_loop/result.json`` and ``rollouts.gif``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw
from scipy import stats

from core.location import Location
from core.settings import StorageConfig
from core.storage import exists, join, publish_bytes, read_bytes
from training.config import ClosedLoopConfig
from training.metrics import Tracker
from training.vla import VLA, load_vla

RESULT, GIF = "closed_loop/result.json", "closed_loop/rollouts.gif"


class World(Protocol):
    """An environment a VLA is rolled out in: ``reset(seed)`` and ``step(action)`` return an observation with
    ``image`` (uint8 H x W x 3) and ``instruction``; ``done``, ``success`` and ``steps`` describe the episode."""

    action_dim: int
    done: bool
    success: bool
    steps: int

    def reset(self, seed: int) -> Any: ...

    def step(self, action: np.ndarray) -> Any: ...


WorldFactory = Callable[..., World]  # called with size= and max_steps= (a class, so it pickles to a Ray worker)


def wilson_interval(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN bounds when ``n`` is 0)."""
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    z = float(stats.norm.ppf((1 + level) / 2))
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


@dataclass(frozen=True)
class ClosedLoopResult:
    """N rollouts: how many succeeded, the rate, its Wilson interval, and per episode its seed, steps and outcome."""

    episodes: int
    successes: int
    rate: float
    low: float
    high: float
    level: float
    seeds: list[int]
    steps: list[int]
    success: list[bool]

    def metrics(self) -> dict[str, float]:
        """MLflow metric names and values."""
        return {"closed_loop/success_rate": self.rate, "closed_loop/success_low": self.low,
                "closed_loop/success_high": self.high, "closed_loop/episodes": float(self.episodes)}


def rollout(vla: VLA, env: World, seed: int, *, execute: int = 1) -> tuple[bool, list[np.ndarray]]:
    """One episode from ``env.reset(seed)``: predict a chunk, execute its first ``execute`` actions, repeat until
    the episode ends; returns the outcome and the frames seen."""
    obs = env.reset(seed)
    frames = [obs.image]
    while not env.done:
        chunk = vla.predict_action(Image.fromarray(obs.image), obs.instruction)
        for action in chunk[:execute]:
            obs = env.step(action)
            frames.append(obs.image)
            if env.done:
                break
    return bool(env.success), frames


def rollouts_gif(episodes: list[tuple[bool, list[np.ndarray]]], *, scale: int = 2, ms: int = 200) -> bytes:
    """The rollouts side by side, one GIF frame per step (an ended episode holds its last frame), each panel
    framed green on success and red on failure."""
    length = max(len(frames) for _, frames in episodes)
    h, w = episodes[0][1][0].shape[:2]
    pad = 3
    gif = []
    for t in range(length):
        canvas = Image.new("RGB", (len(episodes) * (w * scale + 2 * pad), h * scale + 2 * pad), "white")
        draw = ImageDraw.Draw(canvas)
        for i, (ok, frames) in enumerate(episodes):
            x = i * (w * scale + 2 * pad)
            done = t >= len(frames) - 1
            colour = ("green" if ok else "red") if done else "grey"
            draw.rectangle([x, 0, x + w * scale + 2 * pad - 1, h * scale + 2 * pad - 1], fill=colour)
            frame = Image.fromarray(frames[min(t, len(frames) - 1)]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(frame, (x + pad, pad))
        gif.append(canvas)
    buf = io.BytesIO()
    gif[0].save(buf, format="GIF", save_all=True, append_images=gif[1:], duration=ms, loop=0)
    return buf.getvalue()


def evaluate_closed_loop(vla: VLA, world: WorldFactory, config: ClosedLoopConfig) -> tuple[ClosedLoopResult, bytes]:
    """Roll ``vla`` out over ``config.episodes`` seeded episodes of ``world``; the result and a GIF of the first
    ``config.gif_episodes``."""
    env = world(size=config.image_size, max_steps=config.max_steps)
    if vla.spec.action_dim != env.action_dim:
        raise ValueError(f"closed_loop: the world takes {env.action_dim}-dim actions; this VLA predicts "
                         f"{vla.spec.action_dim}")
    seeds = [config.seed + i for i in range(config.episodes)]
    outcomes, steps, shown = [], [], []
    for seed in seeds:
        ok, frames = rollout(vla, env, seed, execute=config.execute)
        outcomes.append(ok)
        steps.append(env.steps)
        if len(shown) < config.gif_episodes:
            shown.append((ok, frames))
    k = sum(outcomes)
    low, high = wilson_interval(k, len(seeds), level=config.level)
    result = ClosedLoopResult(episodes=len(seeds), successes=k, rate=k / len(seeds), low=low, high=high,
                              level=config.level, seeds=seeds, steps=steps, success=outcomes)
    return result, rollouts_gif(shown) if shown else b""


def closed_loop_eval(model_uri: str, world: WorldFactory, config: ClosedLoopConfig, *,
                     storage: StorageConfig | None = None, tracker: Tracker | None = None,
                     step: int = 0) -> ClosedLoopResult:
    """Evaluate the VLA saved at ``model_uri``, store the evaluation beside it and log its metrics at ``step``."""
    vla = load_vla(Location(model_uri, storage))
    result, gif = evaluate_closed_loop(vla, world, config)
    save_closed_loop(model_uri, result, gif, storage)
    if tracker is not None:
        tracker.log_metrics(result.metrics(), step)
    return result


def save_closed_loop(model_uri: str, result: ClosedLoopResult, gif: bytes,
                     storage: StorageConfig | None = None) -> None:
    """Store the evaluation beside the model (the GIF first: the result's presence means complete)."""
    if gif:
        publish_bytes(join(model_uri, GIF), gif, storage)
    publish_bytes(join(model_uri, RESULT), json.dumps(asdict(result), indent=1).encode(), storage)


def load_closed_loop(model_uri: str, storage: StorageConfig | None = None) -> ClosedLoopResult | None:
    """The stored evaluation of the model at ``model_uri``; None when it was not evaluated in closed loop."""
    uri = join(model_uri, RESULT)
    return ClosedLoopResult(**json.loads(read_bytes(uri, storage))) if exists(uri, storage) else None


def log_closed_loop_artifacts(client, run_id: str, model_uri: str, storage: StorageConfig | None = None) -> bool:
    """Log the stored evaluation's ``closed_loop/result.json`` and GIF to an MLflow run (its metrics went through
    the run's tracker); False when the model was not evaluated in closed loop."""
    result = load_closed_loop(model_uri, storage)
    if result is None:
        return False
    client.log_text(run_id, json.dumps(asdict(result), indent=1), RESULT)
    if exists(join(model_uri, GIF), storage):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, os.path.basename(GIF))
            with open(path, "wb") as f:
                f.write(read_bytes(join(model_uri, GIF), storage))
            client.log_artifact(run_id, path, os.path.dirname(GIF))
    return True
