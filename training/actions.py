"""Action normalisation: arm dimensions to [-1, 1] with q01/q99 statistics of the training episodes, the
gripper dimension to a binary target. Saved with the model as JSON, so a VLA unnormalises its own outputs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ActionStats:
    """q01/q99 per action dimension; ``gripper_index`` (non-negative) or None."""

    q01: list[float]
    q99: list[float]
    gripper_index: int | None

    @classmethod
    def fit(cls, actions: np.ndarray, gripper_index: int | None) -> ActionStats:
        """Statistics of ``actions`` [N, A] (training episodes only: the held-out ones must stay unseen); a
        non-finite action does not move them (it still reaches the loss, which then stops the run)."""
        q01, q99 = np.nanquantile(np.where(np.isfinite(actions), actions, np.nan).astype(np.float64), [0.01, 0.99],
                                  axis=0)
        return cls(q01=q01.tolist(), q99=q99.tolist(), gripper_index=gripper_index)

    @property
    def action_dim(self) -> int:
        return len(self.q01)

    @property
    def arm(self) -> np.ndarray:
        """Indices of the continuous dimensions."""
        return np.array([i for i in range(self.action_dim) if i != self.gripper_index], dtype=np.int64)

    def _lo_hi(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.q01, np.float64), np.asarray(self.q99, np.float64)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """[..., A] raw -> arm dims in [-1, 1] (clipped; 0 where q01 == q99), gripper as 0/1 (above the
        midpoint of its q01 and q99)."""
        lo, hi = self._lo_hi()
        span = hi - lo
        safe = np.where(span > 0, span, 1.0)
        out = np.where(span > 0, np.clip(2.0 * (actions - lo) / safe - 1.0, -1.0, 1.0), 0.0)
        if self.gripper_index is not None:
            g = self.gripper_index
            out[..., g] = (actions[..., g] > (lo[g] + hi[g]) / 2).astype(np.float64)
        return out.astype(np.float32)

    def unnormalize(self, actions: np.ndarray) -> np.ndarray:
        """Inverse of ``normalize`` (gripper: a probability or 0/1 -> q99 above 0.5, q01 otherwise)."""
        lo, hi = self._lo_hi()
        out = (np.clip(actions, -1.0, 1.0) + 1.0) / 2.0 * (hi - lo) + lo
        if self.gripper_index is not None:
            g = self.gripper_index
            out[..., g] = np.where(actions[..., g] > 0.5, hi[g], lo[g])
        return out.astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ActionStats:
        return cls(**json.loads(text))


def resolve_gripper(gripper_index: int | None, action_dim: int) -> int | None:
    """A non-negative gripper index; a ValueError naming ``head.gripper_index`` when outside the action."""
    if gripper_index is None:
        return None
    if not -action_dim <= gripper_index < action_dim:
        raise ValueError(f"head.gripper_index {gripper_index} is outside the action (dimension {action_dim})")
    return gripper_index % action_dim
