"""Expected failures of an ``emt`` command as one line, and no traceback above it.

A run that fails for a reason the command reports itself — a lost Ray node, a bad input found by a flow — is
logged on its way out by Prefect (the task's and the flow's failure, each with its traceback) and by Ray Data (an
"internal error" with the full stack); the command then prints its own line. ``quiet_tracebacks`` keeps those log
lines but drops their tracebacks, and drops Ray Data's report-a-bug message, for exactly the exceptions the
command turns into one line; any other exception keeps every traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

# Ray errors that mean the cluster lost a node, or a process on one, under the run: not the run's own fault.
_NODE_LOSS = {"NodeDiedError", "LocalRayletDiedError", "WorkerCrashedError", "ObjectLostError", "OwnerDiedError",
              "ObjectFetchTimedOutError", "ObjectReconstructionFailedError", "ActorDiedError",
              "ActorUnavailableError", "RayActorError"}
# Where the run's failure is logged with a traceback before the command can speak.
_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "ray.data.exceptions")


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def lost_node(err: BaseException) -> str | None:
    """The name of the Ray error in ``err``'s chain that says a node (or a worker process) was lost, else None.
    An actor whose own ``__init__`` raised is the code's fault, not the cluster's."""
    for e in _chain(err):
        kind = type(e)
        if kind.__module__.startswith("ray.") and kind.__name__ in _NODE_LOSS and not getattr(
                e, "actor_init_failed", False):
            return kind.__name__
    return None


def lost_node_message(err: BaseException) -> str | None:
    kind = lost_node(err)
    if kind is None:
        return None
    return (f"the Ray cluster lost a node during the run ({kind}); rerun with the same run_name to resume "
            "(the run id printed above, if none was given): finished shards are not embedded again")


class _QuietExpected(logging.Filter):
    def __init__(self, expected: Callable[[BaseException], bool]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        # Ray Data logs from inside its ``except`` block, without exc_info on the first record: the exception being
        # handled is the one it reports.
        err = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        if err is None or not self.expected(err):
            return True
        if record.name == "ray.data.exceptions":
            return False  # "please open an issue ... full stack trace": not a Ray bug, and said in one line below
        record.exc_info, record.exc_text = None, None
        return True


def quiet_tracebacks(expected: Callable[[BaseException], bool]) -> None:
    """From now on in this process, the run's failure logs carry no traceback for exceptions ``expected`` accepts
    (the command prints its own line for those)."""
    quiet = _QuietExpected(expected)
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(quiet)
