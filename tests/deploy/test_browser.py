"""The UIs in a real browser (the system's headless Chromium driven by Playwright): in the Prefect UI, find the
`curate` deployment, start a custom run with a changed parameter, wait for it to complete and find its artifacts;
in the MLflow UI, find that run and its report. Screenshots go to bench/out/screenshots/."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from infra.stack import ROOT

# Real servers on a 2-core machine: the first test also waits for the shared stack to come up (minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "bench" / "out" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_ID = "from-browser"


@pytest.fixture(scope="module")
def page() -> Iterator:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (bash .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)  # each wait ends when its element shows; a loaded 2-core machine is slow
        yield page
        browser.close()


def shot(page, name: str) -> None:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def _flow_run_of(local_stack, run_name: str, page, *, timeout: float = 600):
    """The flow run the form just created: the deployment's run whose output run id is ``run_name``.

    Asked of the API until it is there (seconds when the machine is idle; the deadline is for a loaded 2-core machine,
    where the browser and the server both wait for a CPU). A failure says which runs the deployment had by then."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    error = "none"
    with local_stack.client() as client:
        while True:
            try:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["curate"])))
            except httpx.HTTPError as e:  # a busy server's late answer: ask again
                error = repr(e)
            else:
                found = [r for r in runs if r.parameters.get("params", {}).get("run_name") == run_name]
                if found:
                    return found[0]
                seen = [f"{r.name} ({r.state_name}, run id {r.parameters.get('params', {}).get('run_name')})"
                        for r in runs]
            if time.monotonic() > deadline:
                shot(page, "prefect-custom-run-not-found")
                raise AssertionError(
                    f"no flow run of `curate` with output run id {run_name} {timeout:.0f} s after the form was "
                    f"submitted; the deployment's runs: {seen or 'none'}; last API error: {error}; page: {page.url}")
            time.sleep(2)


def test_custom_run_from_the_prefect_ui_then_its_mlflow_run(local_stack, page):
    ui = local_stack.services["prefect-server"].url
    page.goto(f"{ui}/deployments")
    page.get_by_role("link", name="curate").first.click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    page.wait_for_url("**/run**")
    # The changed parameter: the output run id (a str-or-None field: pick str, then type it).
    field = page.locator(".schema-form-property", has=page.locator("label", has_text="Output run id")).last
    field.get_by_role("button", name="str", exact=True).click()
    field.locator("textarea").fill(RUN_ID)
    shot(page, "prefect-custom-run-form")
    page.get_by_role("button", name="Submit").click()

    run = _flow_run_of(local_stack, RUN_ID, page)
    page.goto(f"{ui}/runs/flow-run/{run.id}")
    run = local_stack.wait(run.id)
    assert run.state.is_completed(), run.state.message
    page.reload()
    page.get_by_text("Completed").first.wait_for()
    shot(page, "prefect-flow-run-completed")
    page.locator("li.p-tab#artifacts").click()
    page.get_by_text("curation-summary").first.wait_for()
    page.get_by_text("curation-selection").first.wait_for()
    shot(page, "prefect-flow-run-artifacts")

    mlflow_ui = local_stack.services["mlflow"].url
    experiment = MlflowClient(mlflow_ui).get_experiment_by_name("emt-curation")
    page.goto(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning")
    page.get_by_text(RUN_ID).first.click()
    page.wait_for_url("**/runs/**")
    shot(page, "mlflow-run")
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("report", exact=True).first.click()
    page.get_by_text("report.html").first.click()
    shot(page, "mlflow-run-report")


def _new_run_of(local_stack, deployment: str, before: set, page, *, timeout: float = 600):
    """The flow run of ``deployment`` that is not in ``before``: the one the Quick run just created."""
    deadline = time.monotonic() + timeout
    with local_stack.client() as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):  # a busy server's late answer: ask again
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))
                if new := [r for r in runs if r.id not in before]:
                    return new[0]
            if time.monotonic() > deadline:
                shot(page, f"prefect-quick-run-{deployment}-not-found")
                raise AssertionError(f"no new flow run of `{deployment}` {timeout:.0f} s after its Quick run")
            time.sleep(2)


@pytest.mark.timeout(3600)  # four runs one after the other, the pipeline three stages long, on a 2-core machine
def test_every_deployments_quick_run_completes_on_a_fresh_stack(local_stack, page):
    """Run -> Quick run on each deployment, with the defaults prefect.yaml gives and `emt stack up` seeds data for:
    nothing created by hand before (midtrain's default manifest is the seeded reference one)."""
    ui = local_stack.services["prefect-server"].url
    for name in ("curate", "midtrain", "finetune", "pipeline"):
        with local_stack.client() as client:
            before = {r.id for r in client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))}
        page.goto(f"{ui}/deployments")
        page.get_by_role("link", name=name, exact=True).first.click()
        page.wait_for_url("**/deployments/deployment/**")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Quick run").click()
        # The Quick run opens the deployment's defaults in a dialog: run them as they are.
        page.get_by_role("dialog").get_by_role("button", name="Run", exact=True).click()
        run = local_stack.wait(_new_run_of(local_stack, name, before, page).id, timeout=1800)
        if not run.state.is_completed():
            page.goto(f"{ui}/runs/flow-run/{run.id}")
            shot(page, f"prefect-quick-run-{name}-failed")
        assert run.state.is_completed(), f"{name}: {run.state.name}: {run.state.message}"
