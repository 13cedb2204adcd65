"""The run folder: one run per run id at a time, stale leases taken over, finished runs keep their parameters,
crash temporaries cleaned."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.location import Location
from core.storage import filesystem
from tasks.run_folder import LEASE, RunFolder, RunRefused


@pytest.fixture(params=["local", "s3"])
def output_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "runs")
    s3 = request.getfixturevalue("s3")
    return f"{s3.make_bucket('leases')}/{tmp_path.name}"


def _folder(output_uri: str, request) -> RunFolder:
    storage = request.getfixturevalue("s3").storage if output_uri.startswith("s3://") else None
    return RunFolder.open(Location(output_uri, storage), "r1")


def test_second_claim_of_a_held_run_id_is_refused(output_uri, request):
    run = _folder(output_uri, request)
    with run.claim():
        with pytest.raises(RunRefused, match="in use by another run"), run.claim():
            pass
        assert run.location.join(LEASE).exists()
    assert not run.location.join(LEASE).exists()  # given back
    with run.claim():  # and free again
        pass


def test_lease_of_a_killed_process_is_taken_over(output_uri, request):
    run = _folder(output_uri, request)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    holder = {"token": "x", "host": socket.gethostname(), "pid": int(dead.stdout), "heartbeat": 0,
              "flow_run_id": "killed-one"}
    run.location.join(LEASE).publish_bytes(json.dumps(holder).encode())
    with run.claim(holder={"flow_run_id": "new-one"}) as stale:
        lease = json.loads(run.read_bytes(LEASE))
        assert lease["token"] != "x" and lease["flow_run_id"] == "new-one"
        assert stale["flow_run_id"] == "killed-one"  # the taker knows whose records to close
    with run.claim() as stale:  # a free run id: nothing taken over
        assert stale is None


def test_lease_of_another_host_is_taken_over_only_when_stale(output_uri, request):
    import time

    run = _folder(output_uri, request)
    holder = {"token": "x", "host": "elsewhere", "pid": 1, "heartbeat": time.time()}
    run.location.join(LEASE).publish_bytes(json.dumps(holder).encode())
    with pytest.raises(RunRefused, match="elsewhere"), run.claim():
        pass
    run.location.join(LEASE).publish_bytes(json.dumps({**holder, "heartbeat": time.time() - 3600}).encode())
    with run.claim():
        pass


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    import time

    run = RunFolder.open(Location(str(tmp_path)), "beat")
    with run.claim(heartbeat_every=0.05):
        first = json.loads(run.read_bytes(LEASE))["heartbeat"]
        deadline = time.monotonic() + 60  # a beat every 0.05 s; a loaded machine may hold the thread back a while
        while (beat := json.loads(run.read_bytes(LEASE))["heartbeat"]) <= first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat > first, f"no heartbeat after the first ({first}) within 60 s"


def test_crash_temporaries_are_cleaned_on_resume_and_completion(output_uri, request):
    run = _folder(output_uri, request)
    run.location.join(".tmp-0123456789ab-manifest.parquet").publish_bytes(b"half")
    run.location.join("estimator", ".tmp-0123456789ab-model.pt").publish_bytes(b"half")
    run.location.join("errors.parquet").publish_bytes(b"kept")
    with run.claim():
        fs, root = filesystem(run.uri, run.location.storage)
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(root))
        assert names == [LEASE, "errors.parquet"]
        run.location.join(".tmp-ffffffffffff-report.json").publish_bytes(b"half")
    assert not any(".tmp-" in p for p in fs.find(root))


def test_finished_run_with_other_parameters_is_refused(tmp_path):
    run = RunFolder.open(Location(str(tmp_path)), "done")
    run.write_json("params.json", {"k": 20, "pool": ["a"], "ray": {"embed_actors": 1}})
    run.refuse_other_params({"k": 20, "pool": ["a"]})  # same: fine
    with pytest.raises(RunRefused, match=r"run done already finished .* \(k differ\)"):
        run.refuse_other_params({"k": 30, "pool": ["a"]})
