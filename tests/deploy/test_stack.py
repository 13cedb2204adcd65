"""`emt stack up` as a newcomer runs it: every service healthy on loopback, `status` says so, the memory it takes;
`down` leaving no process and no port is checked by the fixture's teardown."""

from __future__ import annotations

import urllib.request

import pytest

from flows.cli import main
from infra import stack

# Real servers on a 2-core machine: the first test also waits for the shared stack to come up (minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_every_service_is_up_on_loopback(local_stack, capsys):
    assert set(local_stack.services) == {"s3", "prefect-server", "mlflow", "ray-head", "prefect-worker"}
    for service in local_stack.services.values():
        assert stack.alive(service) and stack.port_open(service.port)
        if service.health:
            assert service.health.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(service.health, timeout=10) as response:
                assert response.status == 200
    # The UI is told where its API is (PREFECT_UI_API_URL), so it works on a port other than 4200.
    ui = local_stack.services["prefect-server"].url
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:
        assert local_stack.env["PREFECT_API_URL"] in response.read().decode()
    assert main(["stack", "status", "--root", local_stack.config.root]) == 0
    out = capsys.readouterr().out
    assert out.count("running=True") == 5
    # A second `up` starts nothing new: the same processes stay.
    again = stack.up(local_stack.config)
    assert {n: s.pid for n, s in again.items()} == {n: s.pid for n, s in local_stack.services.items()}
    rss = sum(stack.rss_mib(s) for s in local_stack.services.values())
    with capsys.disabled():
        print(f"\nstack up in {local_stack.seconds:.0f} s, {rss:.0f} MiB resident now")


def test_every_listening_socket_of_the_stack_is_on_loopback(local_stack):
    """Every process of the stack (servers, Ray's GCS, raylet, agents and workers, the worker's flow runs) listens
    on 127.0.0.1 only; each service's own process group is walked, so nothing another program runs is counted."""
    from tests.infra.test_stack_loopback import listening, on_loopback

    sockets = {name: listening(service.pid) for name, service in local_stack.services.items()}
    assert all(sockets.values()), f"a service listens nowhere: {sockets}"
    exposed = {name: [s for s in found if not on_loopback(s[1])] for name, found in sockets.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
