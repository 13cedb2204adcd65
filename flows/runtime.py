"""The run-time services a flow attaches to, read from configuration and the environment once, at the top."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import ray
from ray._private import ray_constants


@contextlib.contextmanager
def ray_default_temp(temp_dir: str) -> Iterator[None]:
    """For the block, Ray's default temporary directory is ``temp_dir``/ray, for this process and every process
    started in it (``RAY_TMPDIR``), and that folder exists.

    Ray writes some files to its default directory (``$RAY_TMPDIR/ray``, else ``$TMPDIR/ray`` or ``/tmp/ray``)
    even when a node is given its own temp dir: ``ray.cluster_utils.Cluster`` writes the cluster's address
    (``ray_current_cluster``) there and raises FileNotFoundError on a machine where no Ray has run yet. Pointed at
    the run's own folder, a Ray start depends on nothing an earlier run left and shares nothing with another run.
    """
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before


@contextlib.contextmanager
def local_ray(*, temp_dir: str, num_cpus: int | None = None) -> Iterator[None]:
    """Start a Ray instance on this machine for the block, every process of it listening on 127.0.0.1 only.

    Ray turns a loopback ``_node_ip_address`` into the machine's external address (so that other nodes could
    join) unless multi-node clusters are off, as they are by default on macOS (``ENABLE_RAY_CLUSTER``, from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read when Ray is imported). Turned off while the node starts, its GCS,
    raylet, agents, driver and workers all bind the loopback address; restored after, so a later connection to a
    real cluster from this process is unaffected. Ray's default temporary directory is the instance's own for the
    block (``ray_default_temp``).

    Its workers run at this process's priority (``worker_niceness`` 0), not Ray's default of 15 below it: that
    default keeps a cluster node's Ray services responsive, but on a machine shared with other work it starves the
    run itself (``local_worker_niceness``).
    """
    with ray_default_temp(temp_dir):
        clusters = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
                _system_config=local_worker_niceness(),
            )
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = clusters
        try:
            yield
        finally:
            ray.shutdown()


def local_worker_niceness() -> dict[str, int] | None:
    """The system config that runs a local Ray's workers at the driver's priority, or None where the user set
    ``RAY_worker_niceness`` (Ray's own variable, which then applies). At Ray's default (workers at nice 15), the
    embedding actor beside 3 busy processes on 2 cores got a few percent of a core: 2,000 tiny-model samples took
    412 s to embed, against 14 s at nice 0 there and 6 s on the quiet machine (bench/README.md ``recurate``)."""
    return None if ray_constants.RAY_WORKER_NICENESS in os.environ else {"worker_niceness": 0}


def ray_temp_dir() -> str:
    """Where a local Ray started here keeps its sessions: ``EMT_RAY_TMPDIR``, else ``TMPDIR/emt-ray`` (one per
    checkout or job avoids Ray's shared default, which failed under load when several ran on one machine)."""
    return os.environ.get("EMT_RAY_TMPDIR", tempfile.gettempdir() + "/emt-ray")


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the Ray cluster already initialised in this process, else connect to ``address`` (or ``RAY_ADDRESS``),
    else start a local Ray (on loopback only) for the duration of the block."""
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS")
    if not target:
        with local_ray(temp_dir=ray_temp_dir()):
            yield
        return
    ray.init(address=target, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
