"""``python -m infra.ray_job -- COMMAND ...``: run COMMAND as a Ray job on the cluster whose job server is
``RAY_ADDRESS`` (``http://HEAD:8265``), stream its output and exit with its outcome.

This is how a flow run of the Kubernetes or Docker work pool reaches the Ray cluster: the pod (or container) Prefect
starts is not a Ray node, and Ray advises against Ray Client for ML workloads, so the pod submits the flow-run
command (``prefect flow-run execute``) to the head's job server and the flow's Ray driver runs inside the cluster,
on the head, as Ray's job supervisor starts it (with ``RAY_ADDRESS`` pointing at the cluster). The pod's exit code
is the job's: 0 when it succeeded, 1 when it failed; SIGTERM or SIGINT to the pod (Prefect cancelling the run,
Kubernetes deleting the Job) stops the Ray job. ``EMT_DRIVER_CPUS`` / ``EMT_DRIVER_GPUS`` (default 0) are the
resources the driver asks for; ``EMT_SUBMIT_TIMEOUT`` (300 s) how long a head that is still starting is waited for.

The job gets the pod's Prefect, MLflow, S3 endpoint and EMT_* settings as its environment; no variable whose name
holds KEY, SECRET, PASSWORD or TOKEN is passed (Ray keeps a job's environment in its job table, which the
dashboard shows): the cluster's nodes take credentials from their own Secrets (deploy/k8s/raycluster.yaml).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Mapping

_FORWARD = re.compile(r"^(PREFECT_|MLFLOW_|EMT_)|^(AWS_ENDPOINT_URL|AWS_DEFAULT_REGION|AWS_REGION)$")
_SECRET = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)
_EXIT = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 143}


def job_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` the Ray job is given (see the module's docstring)."""
    return {k: v for k, v in environ.items() if _FORWARD.match(k) and not _SECRET.search(k)}


def submission_id(environ: Mapping[str, str]) -> str:
    """A job id that names the Prefect flow run (Ray's job list then says which run each job was)."""
    run = environ.get("PREFECT__FLOW_RUN_ID", "")
    return f"emt-{run or 'job'}-{uuid.uuid4().hex[:6]}"


def run(command: list[str], *, address: str, environ: Mapping[str, str]) -> int:
    """Submit ``command`` to the job server at ``address``, print its logs as they come, return its exit code."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job = {
        "entrypoint": shlex.join(command),
        "submission_id": submission_id(environ),
        "runtime_env": {"env_vars": job_env(environ)},
        # The driver orchestrates and lands on the head, which offers no resources of its own; a single-worker
        # training run trains in its driver, so EMT_DRIVER_GPUS=1 places it on a GPU worker instead.
        "entrypoint_num_cpus": float(environ.get("EMT_DRIVER_CPUS", 0)),
        "entrypoint_num_gpus": float(environ.get("EMT_DRIVER_GPUS", 0)),
    }
    deadline = time.monotonic() + float(environ.get("EMT_SUBMIT_TIMEOUT", 300))
    while True:
        try:
            job_id = client.submit_job(**job)
            break
        except RuntimeError as err:
            # A head that has just started answers 500 "No available agent ... try again later" until its
            # dashboard agent has registered (seconds; minutes on a busy node).
            if "try again later" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    print(f"ray job {job_id} submitted to {address}", flush=True)

    def stop(signum: int, _frame: object) -> None:
        client.stop_job(job_id)
        print(f"ray job {job_id} stopped ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        asyncio.run(_stream(client, job_id))
        status = str(client.get_job_status(job_id).value)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"ray job {job_id}: {status}", flush=True)
    return _EXIT.get(status, 1)


async def _stream(client: object, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):  # type: ignore[attr-defined]
        sys.stdout.write(chunk)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1:] if "--" in args else args
    address = os.environ.get("RAY_ADDRESS", "")
    if not command or not address.startswith(("http://", "https://")):
        print("infra.ray_job: usage: RAY_ADDRESS=http://HEAD:8265 python -m infra.ray_job -- COMMAND ... "
              f"(RAY_ADDRESS is {address!r}: the head's job server, not its GCS port)", file=sys.stderr)
        return 2
    try:
        return run(command, address=address, environ=os.environ)
    except ConnectionError as err:  # the job server is not reachable: one line, as every expected failure
        print(f"infra.ray_job: the Ray job server at {address} did not answer: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
