"""A run killed with SIGKILL leaves its Prefect flow run RUNNING (nothing ran to close it): the run that takes its
name over marks it CRASHED, naming itself, and completes. A small flow made of ``Run`` alone keeps it cheap: the
lifecycle is what is under test, not the curation."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prefect import flow
from pydantic import BaseModel

from flows.run import Run

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 300  # until the killed run is at work: Prefect's import and flow run start on a loaded machine

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(START_TIMEOUT + 120)]


class Params(BaseModel):
    output_uri: str
    run_name: str
    storage: None = None
    wait: float = 0.0

    def result_params(self) -> dict:
        return {}


class Report(BaseModel):
    run_id: str


@flow(name="held")
def held(params: Params) -> Report:
    """Announces its flow run, then works for ``params.wait`` seconds."""
    run = Run(params, Report)

    def steps() -> Report:
        from prefect.runtime import flow_run

        print(f"working in flow run {flow_run.id}", flush=True)
        time.sleep(params.wait)
        return Report(run_id=run.id)

    return run.execute(steps)


def test_a_run_taken_over_from_a_killed_one_marks_it_crashed(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    output = str(tmp_path / "runs")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "stdout"
    with log.open("w") as out:
        killed = subprocess.Popen([sys.executable, __file__, output], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, text=True)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "working in flow run" not in log.read_text():
            assert killed.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        children = psutil.Process(killed.pid).children(recursive=True)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    finally:
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        killed.kill()  # a no-op once it is gone
    old = log.read_text().split("working in flow run ")[1].split()[0]

    state = held(Params(output_uri=output, run_name="r"), return_state=True)

    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(old).state
        new = client.read_flow_run(state.state_details.flow_run_id)
    assert state.is_completed() and state.result().run_id == "r"
    assert crashed.is_crashed(), crashed
    assert f"taken over by flow run {new.name} ({new.id})" in crashed.message, crashed.message


if __name__ == "__main__":  # the run that is killed
    held(Params(output_uri=sys.argv[1], run_name="r", wait=600))
