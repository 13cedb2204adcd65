"""One run's lifecycle, the same for every flow (curate, midtrain, finetune, ablation): its output checked writable,
a finished run answered with its stored report (never redone, nor answered for other parameters), the run id
leased for the work, the MLflow run opened once and reopened by a rerun, then ``params.json``, ``report.json`` and
``_SUCCESS`` (last) written, and the Prefect artifacts published. A flow is the list of its steps inside ``Run``.

A run taking over the lease of a killed one (``kill -9``: nothing ran to close it) marks that run's Prefect flow run
CRASHED, so the UI does not show it RUNNING forever.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from core.location import Location
from core.settings import MlflowConfig, StorageConfig
from core.storage import check_writable
from tasks.run_folder import RunFolder
from training.recording import MLFLOW_RUN, MlflowTracker
from training.tracking import training_run

R = TypeVar("R", bound=BaseModel)


class RunParams(Protocol):
    """What every flow's parameters say about the run: where it goes, its name, and what decides its result."""

    output_uri: str
    run_name: str | None
    storage: StorageConfig | None

    def result_params(self) -> dict: ...


class Run(Generic[R]):
    """One run of a flow, answered with a report of type ``R``: ``execute`` runs the flow's steps once."""

    def __init__(
        self,
        params: RunParams,
        report: type[R],
        *,
        writable: Mapping[str, str] | None = None,
        stored_params: BaseModel | dict[str, Any] | None = None,
        label: str = "run",
    ) -> None:
        """``writable`` names other settings' URIs to check before any work (beside ``output_uri``);
        ``stored_params`` is what ``params.json`` keeps (``params`` whole by default)."""
        self.started_at = time.time()  # wall clock: an MLflow run recorded at the end starts here
        self._start = time.perf_counter()
        for setting, uri in {"output_uri": params.output_uri, **(writable or {})}.items():
            check_writable(uri, params.storage, setting=setting)
        self.folder = RunFolder.open(Location(params.output_uri, params.storage), params.run_name)
        self._params = params
        self._report = report
        self._stored = params if stored_params is None else stored_params
        self._label = label

    @property
    def id(self) -> str:
        return self.folder.run_id

    @property
    def uri(self) -> str:
        return self.folder.uri

    def path(self, *parts: str) -> str:
        return self.folder.path(*parts)

    def seconds(self) -> float:
        """Seconds since the run started (what its report records)."""
        return round(time.perf_counter() - self._start, 2)

    def execute(self, steps: Callable[[], R], publish: Callable[[R], None] | None = None) -> R:
        """The stored report of a finished run; otherwise ``steps`` under the run id's lease, the run's files
        written (``_SUCCESS`` last), and ``publish`` called with the report once the lease is given back."""
        if self.folder.is_complete():
            self.folder.refuse_other_params(self._params.result_params())
            print(f"{self._label} {self.id} is already complete at {self.uri}")
            return self._report.model_validate(self.folder.read_json("report.json"))
        me = _flow_run()
        with self.folder.claim(holder={"flow_run_id": me[0]} if me else None) as stale:
            if stale and stale.get("flow_run_id"):
                mark_crashed(stale["flow_run_id"], f"run {self.id} was taken over by flow run {_name(me)}")
            report = steps()
            self.folder.write_json("params.json", self._stored)
            self.folder.write_json("report.json", report)
            self.folder.mark_complete()  # last: the run is complete
        if publish:
            publish(report)
        return report

    @contextlib.contextmanager
    def tracked(
        self,
        config: MlflowConfig,
        *,
        kind: str,
        tags: Mapping[str, Any],
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[MlflowTracker]:
        """The run's MLflow run (named ``name``, the run id by default): its id is kept in the run folder, so an
        interrupted run, rerun under its name, reopens it; ``params`` are logged when it is new (MLflow's params
        cannot change)."""
        known = self.folder.location.join(MLFLOW_RUN).exists()
        resumed = self.folder.read_json(MLFLOW_RUN)["run_id"] if known else None
        with training_run(config, run_name=name or self.id, kind=kind, tags=tags, run_id=resumed) as tracker:
            if resumed is None:
                self.folder.write_json(MLFLOW_RUN, {"run_id": tracker.run_id, "tracking_uri": tracker.tracking_uri})
                tracker.log_params(params or {})
            yield tracker


def _flow_run() -> tuple[str, str] | None:
    """This process's Prefect flow run (id, name), if it runs in one."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return (str(context.flow_run.id), context.flow_run.name) if context and context.flow_run else None


def _name(flow_run: tuple[str, str] | None) -> str:
    return f"{flow_run[1]} ({flow_run[0]})" if flow_run else "outside Prefect"


def mark_crashed(flow_run_id: str, message: str) -> None:
    """Set a killed run's Prefect flow run CRASHED, unless something already closed it. Best effort: the record of
    an old run must not stop the new one, so a failure is one printed line."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
            if not (state and state.is_final()):
                client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
                print(f"flow run {flow_run_id} marked crashed: {message}")
    except Exception as exc:  # noqa: BLE001 - the API unreachable, the flow run deleted: the new run goes on
        print(f"could not mark flow run {flow_run_id} crashed ({type(exc).__name__}: {exc})")
