"""Ports for the servers the dev stack and the tests start and restart."""

from __future__ import annotations

import socket

from devstack.proc import _LOWEST_PORT, _ephemeral_start, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_free() -> None:
    # A server on an ephemeral port can find it taken, after a restart, as the source port
    # of some outgoing connection; ports below the range are never handed out that way.
    start = _ephemeral_start()
    ports = [free_port() for _ in range(50)]
    assert all(_LOWEST_PORT <= port < start for port in ports), sorted(ports)
    assert len(set(ports)) == len(ports)  # never the same port twice in a process
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
