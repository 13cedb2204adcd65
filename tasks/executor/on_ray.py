"""Units on the current Ray cluster, retried by Ray itself: the work raises ``TransientFault`` for a transient
fault (``RetryPolicy.once``) and Ray resubmits exactly that error type (``retry_exceptions``) up to
``policy.retries`` times, as it does for a lost worker process (``max_retries``) or actor (``max_restarts``,
``max_task_retries``). Any other error fails the unit at its first attempt. Ray does not tell a unit how many
attempts it took, so rows from Ray carry ``attempts=None``.

- ``RayTasks``: one task per unit, for work without a model to load (``setup``).
- ``RayActors``: a fixed pool of actors, each holding one copy of a stage set up once (a loaded model), one unit
  at a time. ``ray.util.ActorPool`` would hold the idle actors, but its ``get_next_unordered`` cannot say which
  unit a failure belongs to, and a failure must name its unit; the pool here is the idle list it would keep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ray

from core.errors import cluster_lost
from tasks.executor.policy import RetryPolicy, TransientFault


def _once(work: Callable[[Any], Any], unit: Any, policy: RetryPolicy) -> Any:
    return policy.once(work, unit)


class _Holder:
    """One actor's copy of the work, set up when the actor starts (so once per actor, never per unit)."""

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self.work = work
        if hasattr(work, "setup"):
            work.setup()

    def ready(self) -> None:
        """Returns once ``setup`` is done: a setup that fails raises in the driver at once, not once per unit."""

    @ray.method(retry_exceptions=(TransientFault,))
    def run(self, unit: Any, policy: RetryPolicy) -> Any:
        return policy.once(self.work, unit)


def _local_raylet_gone() -> bool:
    """Whether the raylet this driver started has exited (False when the driver joined a cluster it did not start:
    then Ray itself ends the driver if its node goes)."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    raylets = node.all_processes.get("raylet", []) if node is not None else []
    return bool(raylets) and all(info.process.poll() is not None for info in raylets)


def _get(refs: Any) -> Any:
    """``ray.get``, where an actor or worker lost with the driver's own node is ``ClusterLost`` (one clear error,
    not Ray's) — lost with another node, it is Ray's to retry (``max_restarts``) or to report."""
    try:
        return ray.get(refs)
    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.LocalRayletDiedError, ray.exceptions.RaySystemError):
        if _local_raylet_gone():
            raise cluster_lost("its raylet exited") from None
        raise


def _result(ref: ray.ObjectRef) -> tuple[Any, None]:
    """The unit's result, or its own error out of Ray's wrapper (``RayTaskError.cause``)."""
    try:
        return _get(ref), None
    except ray.exceptions.RayTaskError as err:
        if err.cause is None:
            raise
        raise err.cause from None


def _ready(refs: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
    return ray.wait(refs, num_returns=1)[0]


@dataclass
class _TaskSession:
    remote: Any
    work: ray.ObjectRef
    policy: RetryPolicy
    in_flight: int

    def submit(self, unit: Any) -> ray.ObjectRef:
        return self.remote.remote(self.work, unit, self.policy)

    def wait(self, handles: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
        return _ready(handles)

    def result(self, handle: ray.ObjectRef) -> tuple[Any, None]:
        return _result(handle)


@dataclass(frozen=True)
class RayTasks:
    """One Ray task per unit, each reserving ``cpus``/``gpus``; at most ``in_flight`` submitted at once (default:
    as many as the cluster's CPUs hold), so the driver never queues 100k tasks in Ray."""

    cpus: float = 1.0
    gpus: float = 0.0
    in_flight: int | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @contextmanager
    def open(self, work: Callable[[Any], Any], units: int) -> Iterator[_TaskSession]:
        if hasattr(work, "setup"):
            raise TypeError(f"{type(work).__name__} has setup(): run it on RayActors, which set it up once per actor")
        remote = ray.remote(_once).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.policy.retries,
                                           retry_exceptions=[TransientFault])
        bound = self.in_flight or max(1, int(ray.cluster_resources().get("CPU", 1) // max(self.cpus, 0.01)))
        yield _TaskSession(remote, ray.put(work), self.policy, max(1, min(bound, units)))


@dataclass
class _ActorSession:
    idle: list[Any]
    policy: RetryPolicy
    in_flight: int
    busy: dict[ray.ObjectRef, Any] = field(default_factory=dict)

    def submit(self, unit: Any) -> ray.ObjectRef:
        actor = self.idle.pop()  # the driver submits only below in_flight, so one is idle
        ref = actor.run.remote(unit, self.policy)
        self.busy[ref] = actor
        return ref

    def wait(self, handles: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
        return _ready(handles)

    def result(self, handle: ray.ObjectRef) -> tuple[Any, None]:
        self.idle.append(self.busy.pop(handle))
        return _result(handle)


@dataclass(frozen=True)
class RayActors:
    """``actors`` actors, each reserving ``cpus``/``gpus`` and holding the work set up once; ``calls`` units per
    actor at a time, so ``actors x calls`` is the in-flight bound. With ``calls`` > 1 the actor runs its units on
    threads (Ray's ``max_concurrency``): the next unit's I/O and CPU tasks start while the current one computes,
    so waiting does not stop at a unit's boundary; the work must serialise what cannot share (the model)."""

    actors: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    calls: int = 1

    @contextmanager
    def open(self, work: Callable[[Any], Any], units: int) -> Iterator[_ActorSession]:
        retries = self.policy.retries
        cls = ray.remote(_Holder).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=retries,
                                          max_task_retries=retries, max_concurrency=max(1, self.calls))
        actors = [cls.remote(work) for _ in range(max(1, min(self.actors, units)))]
        try:
            _get([a.ready.remote() for a in actors])
            slots = [a for _ in range(max(1, self.calls)) for a in actors]  # an actor once per call it may hold
            yield _ActorSession(slots, self.policy, len(slots))
        finally:
            for actor in actors:
                ray.kill(actor)
