"""One executor for every bounded loop of work in curation (datatrove's executors, NeMo Curator's backends).

A job is a list of work units (a shard, a score range, an export shard, a cache entry) plus the work: a function,
or a stage whose ``setup()`` loads what it needs once per worker. The executor runs it on threads in this process
(``Threads``), as Ray tasks (``on_ray.RayTasks``) or on a pool of Ray actors (``on_ray.RayActors``), and owns what
every loop needs alike: the in-flight bound, the retry of transient faults (``RetryPolicy``, asking
``core.errors.is_transient``), the progress feed, one summary row per unit, completion markers, ``stats.json``
and the step timings (``timings``).

    report = run(Job(step="export", units=shards, work=export_shard, name=lambda s: s.name), Threads(workers=8))
    report.raise_for_failed("a rerun writes them")

The Ray backends live in ``tasks.executor.on_ray`` so that a job on threads never imports Ray.
"""

from tasks.executor.jobs import Executor, Failure, Job, JobFailed, Report, Resources, map_ordered, run
from tasks.executor.policy import RetryPolicy, TransientFault
from tasks.executor.threads import Threads
from tasks.executor.timings import StepTimes, recording

__all__ = [
    "Executor",
    "Failure",
    "Job",
    "JobFailed",
    "Report",
    "Resources",
    "RetryPolicy",
    "StepTimes",
    "Threads",
    "TransientFault",
    "map_ordered",
    "recording",
    "run",
]
