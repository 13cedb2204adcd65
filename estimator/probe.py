"""The proximity estimator: s(x) = sigmoid(f(φ(x))) on frozen backbone features, trained robot (1) vs pool (0).

With balanced classes, the Bayes-optimal logit of this classifier is log p_robot(x) / p_pool(x), so ranking pool
samples by the score ranks them exactly as the density ratio does (EmbodiedMidtrain's recipe). The score a run
records is that **logit**, not the sigmoid: in float32 the sigmoid rounds to exactly 1.0 from a logit of about 17,
so confident samples would tie and fall back to pool order; the logit keeps them apart, and it keeps one meaning
across runs (an estimate of the log density ratio; sigmoid(score) is P(robot | x) under equal priors).

The estimator may read only some columns of the vector (``columns``: the image part of an image+text vector, by
default); it is stored with it. Training is deterministic from ``EstimatorConfig.seed``; persistence is
safetensors + a JSON sidecar, never pickle.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import numpy as np
import safetensors.torch
import torch
from torch import nn
from torch.nn import functional as F

from core.location import Location
from estimator.config import EstimatorConfig

FORMAT = "embodied-midtrain/proximity-estimator"
FORMAT_VERSION = 1
MODEL_FILE, META_FILE = "model.safetensors", "estimator.json"


def as_features(x: np.ndarray, *, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` as a non-empty 2-D float32 array (of width ``dim`` if given), or a ValueError naming ``name``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} features must be a non-empty 2-D array (n, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} features are {x.shape[1]}-d but {dim}-d features were expected")
    return np.ascontiguousarray(x, dtype=np.float32)


class ProximityEstimator(nn.Module):
    """Feature standardisation (buffers) followed by the head; ``forward`` takes the ``columns`` part of the
    vectors and returns logits."""

    name = "estimator"

    def __init__(self, *, embed_dim: int, head: Literal["linear", "mlp"] = "linear", hidden_dim: int = 256,
                 backbone_fingerprint: str = "", metadata: dict[str, Any] | None = None,
                 columns: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.embed_dim, self.head_kind, self.hidden_dim = embed_dim, head, hidden_dim
        self.columns = columns or (0, embed_dim)
        if not 0 <= self.columns[0] < self.columns[1] <= embed_dim:
            raise ValueError(f"columns {self.columns} do not fit {embed_dim}-d features")
        width = self.columns[1] - self.columns[0]
        self.backbone_fingerprint = backbone_fingerprint
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        if head == "linear":
            self.head = nn.Linear(width, 1)
        else:
            self.head = nn.Sequential(nn.Linear(width, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std).squeeze(-1)

    @torch.inference_mode()
    def logits(self, features: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
        """Logits (≈ log density ratio) of full vectors; unlike the sigmoid they never saturate into ties.

        A linear head is applied as one affine map with the standardisation folded in (w/σ and b − w·μ/σ): one pass
        over the vectors instead of ``forward``'s two vector-sized temporaries, which made scoring several times
        slower than reading the vectors. It agrees with ``forward`` to float rounding (~1e-6)."""
        x = as_features(features, name="scored", dim=self.embed_dim)[:, slice(*self.columns)]
        self.eval()
        if self.head_kind == "linear":
            weight = self.head.weight / self.std
            bias = self.head.bias - (weight * self.mean).sum()

            def apply(v: torch.Tensor) -> torch.Tensor:
                return F.linear(v, weight, bias).squeeze(-1)
        else:
            apply = self
        out = [apply(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def score(self, features: np.ndarray, ids: list[str] | None = None, *, batch_size: int = 65536) -> np.ndarray:
        """The logits, float32: the run's score and ranking key; ``ids`` is accepted for the ``Scorer`` protocol
        and ignored."""
        return self.logits(features, batch_size=batch_size)


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank sum (ties get average ranks)."""
    scores = np.concatenate([np.ravel(pos), np.ravel(neg)]).astype(np.float64)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    n_pos, n_neg = len(np.ravel(pos)), len(np.ravel(neg))
    rank_sum = avg_rank[inverse][:n_pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def balanced_batch(robot: torch.Tensor, pool: torch.Tensor, batch_size: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Half robot rows (label 1), half pool rows (label 0), drawn with replacement, so the classifier sees equal
    priors however unequal the two sets are; that makes its logit the log density ratio."""
    half = batch_size // 2
    ri = torch.randint(len(robot), (half,), generator=generator)
    pi = torch.randint(len(pool), (half,), generator=generator)
    x = torch.cat([robot[ri], pool[pi]])
    y = torch.cat([torch.ones(half), torch.zeros(half)])
    return x, y


def _split(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/val indices; both sides get at least one sample."""
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@torch.inference_mode()
def _evaluate(est: ProximityEstimator, robot: torch.Tensor, pool: torch.Tensor) -> tuple[float, float]:
    """Balanced accuracy at logit 0 (mean of per-class accuracies) and AUC on the validation split."""
    est.eval()
    lr, lp = est(robot).numpy(), est(pool).numpy()
    est.train()
    return float(0.5 * ((lr > 0).mean() + (lp <= 0).mean())), roc_auc(lr, lp)


def train_estimator(robot: np.ndarray, pool: np.ndarray, config: EstimatorConfig, *,
                    backbone_fingerprint: str, columns: tuple[int, int] | None = None,
                    ) -> tuple[ProximityEstimator, dict[str, Any]]:
    """Fit the estimator robot-vs-pool on ``columns`` of the vectors (all by default); stop at the target
    validation accuracy or ``max_steps``."""
    t0 = time.perf_counter()
    robot = as_features(robot, name="robot")
    pool = as_features(pool, name="pool", dim=robot.shape[1])
    embed_dim = robot.shape[1]
    a, b = columns or (0, embed_dim)
    robot, pool = np.ascontiguousarray(robot[:, a:b]), np.ascontiguousarray(pool[:, a:b])
    for label, x in (("robot", robot), ("pool", pool)):
        if len(x) < 2:
            raise ValueError(f"{label} features: need at least 2 samples (train + validation), got {len(x)}")
    rng = np.random.default_rng(config.seed)
    r_tr, r_va = _split(len(robot), config.val_fraction, rng)
    p_tr, p_va = _split(len(pool), config.val_fraction, rng)
    rt, rv = torch.from_numpy(robot[r_tr]), torch.from_numpy(robot[r_va])
    pt, pv = torch.from_numpy(pool[p_tr]), torch.from_numpy(pool[p_va])

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        est = ProximityEstimator(embed_dim=embed_dim, head=config.head, hidden_dim=config.hidden_dim,
                                 backbone_fingerprint=backbone_fingerprint, columns=(a, b))
    if config.normalize:
        train = torch.cat([rt, pt])
        est.mean.copy_(train.mean(0))
        est.std.copy_(train.std(0).clamp_min(1e-6))  # constant features must not divide by zero
    opt = torch.optim.AdamW(est.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(config.seed)

    est.train()
    step, train_loss, val_acc, val_auc, reached = 0, float("nan"), 0.0, 0.5, False
    for step in range(1, config.max_steps + 1):
        x, y = balanced_batch(rt, pt, config.batch_size, gen)
        loss = loss_fn(est(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % config.eval_every == 0 or step == config.max_steps:
            train_loss = loss.item()  # .item() syncs; only at eval intervals
            val_acc, val_auc = _evaluate(est, rv, pv)
            if step >= config.min_steps and val_acc >= config.target_val_accuracy:
                reached = True
                break
    est.eval()
    metrics: dict[str, Any] = {
        "steps": step, "train_loss": train_loss, "val_accuracy": val_acc, "val_auc": val_auc,
        "reached_target": reached, "stopped_early": reached and step < config.max_steps,
        "n_robot": len(robot), "n_pool": len(pool), "n_train_robot": len(r_tr), "n_val_robot": len(r_va),
        "n_train_pool": len(p_tr), "n_val_pool": len(p_va), "seconds": time.perf_counter() - t0,
    }
    est.metadata = {"config": config.model_dump(mode="json"), "metrics": metrics}
    return est, metrics


def save_estimator(est: ProximityEstimator, where: str | Location) -> None:
    """Write ``model.safetensors`` then ``estimator.json`` at ``where`` (the sidecar last: it marks completion)."""
    where = Location.of(where)
    tensors = {k: v.detach().contiguous() for k, v in est.state_dict().items()}
    blob = safetensors.torch.save(tensors, metadata={"format": FORMAT,
                                                     "backbone_fingerprint": est.backbone_fingerprint})
    where.join(MODEL_FILE).publish_bytes(blob)
    metrics = est.metadata.get("metrics", {})
    sidecar = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "head": est.head_kind, "hidden_dim": est.hidden_dim,
        "embed_dim": est.embed_dim, "columns": list(est.columns), "backbone_fingerprint": est.backbone_fingerprint,
        "config": est.metadata.get("config"), "metrics": metrics,
        "counts": {k: metrics[k] for k in ("n_robot", "n_pool") if k in metrics},
    }
    where.join(META_FILE).publish_bytes(json.dumps(sidecar, indent=2, sort_keys=True).encode())


def load_estimator(where: str | Location, *, expect_fingerprint: str | None = None,
                   expect_dim: int | None = None) -> ProximityEstimator:
    """Load an estimator saved by ``save_estimator``, refusing one trained on other features."""
    where = Location.of(where)
    uri = where.uri
    meta = json.loads(where.join(META_FILE).read_bytes())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{uri}: not a proximity estimator of format version {FORMAT_VERSION} "
                         f"(format={meta.get('format')!r}, version={meta.get('format_version')!r})")
    fp, dim = meta["backbone_fingerprint"], int(meta["embed_dim"])
    if expect_fingerprint is not None and fp != expect_fingerprint:
        raise ValueError(f"{uri}: estimator was trained on backbone {fp!r}, this run embeds with "
                         f"{expect_fingerprint!r}; retrain it or use the matching backbone")
    if expect_dim is not None and dim != expect_dim:
        raise ValueError(f"{uri}: estimator expects {dim}-d features, this run has {expect_dim}-d features")
    columns = tuple(meta.get("columns") or (0, dim))
    est = ProximityEstimator(embed_dim=dim, head=meta["head"], hidden_dim=int(meta["hidden_dim"]),
                             backbone_fingerprint=fp, columns=columns,  # type: ignore[arg-type]
                             metadata={"config": meta.get("config"), "metrics": meta.get("metrics", {})})
    tensors = safetensors.torch.load(where.join(MODEL_FILE).read_bytes())
    try:
        est.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{uri}: weights do not match the sidecar ({err})") from None
    return est.eval()
