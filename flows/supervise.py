"""A command's run on Ray, watched from a parent process, so that a lost Ray cluster is one line, not a silent exit.

When the raylet of a local Ray dies, Ray's core worker ends the driver at once (a C-level quick exit): no Python
``except``, ``finally`` or ``atexit`` runs, so the run cannot report it, and what it started — Prefect's ephemeral
API server, Ray's GCS and workers — is orphaned, with its flow runs left RUNNING. So the command forks: the child
goes on to run exactly as an unsupervised command would (its output, exit code and clean-up are unchanged), while
the parent only waits. The child ends every normal Python exit (a return, ``sys.exit``, a traceback) by telling the
parent through a pipe, from its last ``atexit`` handler; a child that ended without telling was ended from below
Python. Then the parent prints one line, marks the child's flow runs CRASHED (through the configured Prefect API,
else through the child's orphaned ephemeral server, before ending it) and ends every process the child left behind:
on Linux the parent is a child subreaper, so orphans of the run become its own children and none escapes. Elsewhere
only descendants still attached are found. Without ``fork`` (Windows) the command runs unsupervised.

The other way round, the child must not outlive the command: a parent killed with SIGKILL (an OOM killer, a closed
session, ``kill -9``) can do nothing, and a child that ran on would finish training and register a model nobody
is waiting for. So the child watches a pipe only the parent holds open: at its end-of-file (the parent is gone,
however it ended) the child says so in one line, marks its open MLflow training runs KILLED (a loaded machine may not
unwind in time to) and interrupts its own main thread as Ctrl-C would, so the run unwinds the usual way (flow run
marked, DataLoader workers, Ray and Prefect's server stopped); what is still running ``GRACE_S`` later is ended,
and the child exits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psutil

from core.errors import lost_cluster_ends_process

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_EPHEMERAL_APP = "prefect.server.api.server:create_app"  # what Prefect's ephemeral server runs (uvicorn --factory)
GRACE_S = 10.0  # how long a child whose parent died may take to wind its run down before it is ended


def run_supervised(work: Callable[[], int], *, command: str) -> int:
    """``work()``'s exit code, run in a forked child that this process watches (see the module's docstring)."""
    if not hasattr(os, "fork"):
        return work()
    _become_subreaper()
    marker = f"emt-process-{uuid.uuid4().hex[:12]}"  # a tag on every flow run of the child, to find them after
    receive, send = os.pipe()
    watched, held = os.pipe()  # ``held`` stays open in the parent alone: its end-of-file tells the child it died
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(receive)
        os.close(held)
        atexit.register(_tell, send)  # registered first, so it runs last: after every other clean-up
        lost_cluster_ends_process()  # as Ray would a moment later: the parent says it in one line
        orphaned = _watch_parent(watched, command)
        from prefect import tags

        try:
            with tags(marker):
                return work()
        except KeyboardInterrupt:
            if not orphaned.is_set():
                raise
            return 128 + signal.SIGINT  # the run wound down after the command was killed: said above, no traceback
    os.close(send)
    os.close(watched)
    with _signals_to(pid):
        _, raw = os.waitpid(pid, 0)
    os.close(held)
    finished = os.read(receive, 1) == b"1"
    os.close(receive)
    status = os.waitstatus_to_exitcode(raw)  # negative: the signal that ended it
    code = 128 - status if status < 0 else status  # ended by a signal: the shell's 128 + its number
    if finished:
        return code
    cause = (f"the run's process was ended by {signal.Signals(-status).name}" if status < 0
             else "the Ray cluster was lost during the run (its raylet exited)")
    print(f"emt {command}: {cause}; run the same command again to resume", file=sys.stderr, flush=True)
    left = psutil.Process().children(recursive=True)
    with contextlib.suppress(Exception):  # best effort: the line above is the report, whatever the API says
        _mark_crashed(marker, left, cause)
    _end(left)
    return code or 1


def _tell(send: int) -> None:
    """The child's last word to the parent: it ended through Python (a parent already gone cannot hear it)."""
    with contextlib.suppress(OSError):
        os.write(send, b"1")


def _watch_parent(watched: int, command: str) -> threading.Event:
    """In the child: a thread that ends the run once the parent is gone (see the module's docstring). The event
    it returns is set from then on."""
    orphaned = threading.Event()
    main = threading.main_thread().ident

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(watched, 1):  # the parent never writes: this returns b"" once it has died
                pass
        orphaned.set()
        print(f"emt {command}: the command's process was killed; the run stops", file=sys.stderr, flush=True)
        tracking = sys.modules.get("training.tracking")  # loaded only by a run that trains (it imports torch)
        if tracking is not None:  # its MLflow runs are marked first: a loaded machine may not unwind in GRACE_S
            tracking.end_open_runs("KILLED")
        if callable(signal.getsignal(signal.SIGINT)):  # Python handles it (else it is ignored: go straight on)
            signal.pthread_kill(main, signal.SIGINT)  # the main thread's blocking call is interrupted too
        time.sleep(GRACE_S)
        _end(psutil.Process().children(recursive=True))
        os._exit(128 + signal.SIGKILL)

    threading.Thread(target=watch, name="emt-parent-watch", daemon=True).start()
    return orphaned


def _become_subreaper() -> None:
    """Orphans of the child's tree are re-parented to this process instead of init (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@contextlib.contextmanager
def _signals_to(pid: int) -> Iterator[None]:
    """While the child runs: Ctrl-C reaches it from the terminal (this process ignores it), SIGTERM is passed on."""
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _: os.kill(pid, signum))}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _mark_crashed(marker: str, left: list[psutil.Process], cause: str) -> None:
    """Set the child's unfinished flow runs CRASHED through the Prefect API they were recorded in."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    api = PREFECT_API_URL.value() or _ephemeral_api(left)
    if not api:
        return
    unfinished = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[marker]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
    )
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=unfinished):
            client.set_flow_run_state(run.id, Crashed(message=cause), force=True)


def _ephemeral_api(left: list[psutil.Process]) -> str | None:
    """The URL of the ephemeral Prefect server the child started, found by its command line and listening port."""
    for proc in left:
        with contextlib.suppress(psutil.Error):
            if _EPHEMERAL_APP in proc.cmdline():
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        return f"http://127.0.0.1:{conn.laddr.port}/api"
    return None


def _end(left: list[psutil.Process]) -> None:
    """Terminate what the child left behind, then kill what did not stop within five seconds."""
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
