"""Small process helpers shared by the PostgreSQL, Kafka and service launchers."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import time
from pathlib import Path

#: The lowest port `free_port` picks (below lie well-known and common service ports).
_LOWEST_PORT = 10_000
#: Linux's default start of the ephemeral range, for when the system's cannot be read.
_EPHEMERAL_FALLBACK = 32_768


#: The ports `free_port` has returned in this process.
_GIVEN: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_FALLBACK


def free_port() -> int:
    """A loopback port free now, below the system's ephemeral range.

    Not the kernel's choice (`bind` to port 0), which comes from the ephemeral range: the
    servers on these ports (the tests', the benchmarks' stacks) may be restarted (the fault
    harness restarts PostgreSQL and Kafka), and while one is down any outgoing connection (a
    service reconnecting to PostgreSQL, say) may be given its port as a source port, so that
    the restarted server cannot listen."""
    rng = random.SystemRandom()
    top = max(_ephemeral_start(), _LOWEST_PORT + 1_000)
    for _ in range(200):
        port = rng.randrange(_LOWEST_PORT, top)
        if port in _GIVEN:  # handed out already, its server perhaps not listening yet
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {_LOWEST_PORT} and {top}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it so it reads as dead.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(pid_file: Path) -> int | None:
    pid = read_pid(pid_file)
    return pid if pid is not None and pid_alive(pid) else None


def terminate(pid: int, *, timeout: float = 20.0, group: bool = True) -> None:
    """SIGTERM the process (and its group), escalate to SIGKILL after `timeout`."""
    send = os.killpg if group else os.kill
    try:
        send(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        send(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)
