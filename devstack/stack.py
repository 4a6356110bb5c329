"""`make up`, `make down`, `make status`, `make run`: the whole stack on this machine.

PostgreSQL and Kafka start locally unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS point at
existing servers. The three services run as background processes with pid files in
.run/pids/ and logs in .run/logs/; `.run/stack.env` says how to reach everything.
`up` is idempotent: it starts only what is not running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devstack.kafka import LocalKafka
from devstack.kafka import wait_ready as kafka_wait_ready
from devstack.postgres import EmbeddedPostgres
from devstack.proc import running_pid, terminate

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("api", "generator", "finalizer")


class Stack:
    def __init__(self, run_dir: Path, *, api_port: int = 8080, pg_port: int = 5433,
                 kafka_port: int = 9092, kafka_controller_port: int = 9093,
                 pg_fsync: bool = True, extra_env: dict[str, str] | None = None,
                 database_url: str | None = None, bootstrap_servers: str | None = None,
                 topic_partitions: int = 6, pg_settings: dict[str, str] | None = None) -> None:
        """`database_url` / `bootstrap_servers`: existing servers to use instead of local ones;
        `pg_settings`: further settings of the local PostgreSQL server."""
        self.run = run_dir
        self.pids = run_dir / "pids"
        self.logs = run_dir / "logs"
        self.api_port = api_port
        self.external_db = database_url
        self.external_kafka = bootstrap_servers
        self.postgres = EmbeddedPostgres(run_dir / "postgres", pg_port, fsync=pg_fsync,
                                         settings=pg_settings or {})
        self.kafka = LocalKafka(run_dir / "kafka", kafka_port, kafka_controller_port,
                                pid_path=self.pids / "kafka.pid")
        self.extra_env = extra_env or {}
        self.topic_partitions = topic_partitions

    # --- addresses -------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.external_db or self.postgres.url

    @property
    def bootstrap(self) -> str:
        return self.external_kafka or self.kafka.bootstrap

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def admin_token(self) -> str:
        path = self.run / "admin_token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "INFLUGEN_API_PORT": str(self.api_port),
            "INFLUGEN_PUBLIC_URL": self.api_url,
            "INFLUGEN_ADMIN_TOKEN": self.admin_token,
            "INFLUGEN_MEDIA_DIR": str(self.run / "media"),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    # --- infrastructure --------------------------------------------------------------

    def start_postgres(self) -> None:
        if self.external_db:
            return
        pid = self.postgres.start()
        (self.pids / "postgres.pid").write_text(str(pid))

    def start_kafka(self) -> None:
        if self.external_kafka:
            kafka_wait_ready(self.external_kafka, timeout=60)
            return
        self.kafka.start()

    def prepare(self) -> None:
        from shared.db import migrate
        from shared.kafka import ensure_topics

        asyncio.run(migrate(self.database_url))
        asyncio.run(ensure_topics(self.bootstrap, self.topic_partitions))

    # --- services --------------------------------------------------------------------

    def service_pid(self, name: str) -> int | None:
        return running_pid(self.pids / f"{name}.pid")

    def ready_file(self, name: str) -> Path:
        return self.pids / f"{name}.ready"

    def start_service(self, name: str) -> int:
        pid = self.service_pid(name)
        if pid is not None and not self.ready_file(name).exists():
            pid = self._serves_or_exits(name, pid)
        if pid is not None:
            return pid
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ready_file(name).unlink(missing_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}.main"], cwd=ROOT,
                env={"INFLUGEN_INSTANCE_ID": f"{name}-1", **self.service_env(),
                     "INFLUGEN_READY_FILE": str(self.ready_file(name))},
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def _serves_or_exits(self, name: str, pid: int, timeout: float = 90) -> int | None:
        """A process that is alive but not ready is starting or stopping (a service removes
        its ready file as it starts to stop): wait until it serves (its pid) or has exited
        (None: start another), so that `make up` right after a SIGTERM does not count a
        process on its way out as running."""
        deadline = time.monotonic() + timeout
        while not self.ready_file(name).exists() and time.monotonic() < deadline:
            if self.service_pid(name) != pid:
                return None
            time.sleep(0.1)
        return pid

    def stop_service(self, name: str) -> None:
        pid = self.service_pid(name)
        if pid is not None:
            terminate(pid, timeout=20)
        (self.pids / f"{name}.pid").unlink(missing_ok=True)

    def wait_services(self, timeout: float = 90) -> None:
        """Until every service says it consumes and serves (its consumers have joined their
        groups, which takes a session timeout when a killed member is still registered)."""
        deadline = time.monotonic() + timeout
        for name in SERVICES:
            pid = self.service_pid(name)
            if pid is None or self._serves_or_exits(
                    name, pid, deadline - time.monotonic()) is None:
                raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")
            if not self.ready_file(name).exists():
                raise RuntimeError(f"{name} not ready after {timeout}s")

    def wait_api(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.service_pid("api") is None:
                raise RuntimeError(f"the api exited; see {self.logs / 'api.log'}")
            try:
                with urllib.request.urlopen(self.api_url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"the api is not ready after {timeout}s ({last})")

    # --- whole stack -----------------------------------------------------------------

    def up(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        self.start_postgres()
        self.start_kafka()
        self.prepare()
        for name in SERVICES:
            self.start_service(name)
        self.wait_services()
        self.wait_api()

    def down(self) -> None:
        for name in SERVICES:
            self.stop_service(name)
        if not self.external_kafka:
            self.kafka.stop()
        if not self.external_db:
            self.postgres.stop()
            (self.pids / "postgres.pid").unlink(missing_ok=True)

    def status(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {name: self.service_pid(name) for name in SERVICES}
        out["kafka"] = None if self.external_kafka else self.kafka.pid()
        out["postgres"] = None if self.external_db else self.postgres.pid()
        return out

    def write_env(self, api_key: str) -> Path:
        path = self.run / "stack.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in {
            "INFLUGEN_API_URL": self.api_url,
            "INFLUGEN_ADMIN_TOKEN": self.admin_token,
            "INFLUGEN_API_KEY": api_key,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self.database_url,
        }.items()))
        return path


# --- the demo workspace ------------------------------------------------------------------

def call_api(method: str, url: str, token: str, body: Any = None) -> Any:
    """A blocking JSON call with a bearer token (the demo, benchmarks and tests use it)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def ensure_demo(stack: Stack) -> dict[str, Any]:
    """A demo workspace with a manual and an autopilot character, and one demo video."""
    path = stack.run / "demo.json"
    if path.exists():
        demo: dict[str, Any] = json.loads(path.read_text())
        try:
            call_api("GET", f"{stack.api_url}/v1/credits", demo["api_key"])
            return demo
        except urllib.error.HTTPError:
            pass  # a fresh database: make the demo again
    ws = call_api("POST", f"{stack.api_url}/v1/admin/workspaces", stack.admin_token,
               {"name": "Demo workspace", "credits": 1000})
    key = ws["api_key"]
    manual = call_api("POST", f"{stack.api_url}/v1/characters", key,
                   {"name": "Mila Rivers", "review_mode": "manual"})
    auto = call_api("POST", f"{stack.api_url}/v1/characters", key,
                 {"name": "Theo Vance", "review_mode": "autopilot"})
    video = call_api("POST", f"{stack.api_url}/v1/videos", key, {
        "character_id": manual["id"],
        "scene_description": "Walking through a marble hotel lobby at golden hour, subtle "
        "camera push-in, confident luxury travel energy, soft motion in the dress, cinematic "
        "but social-first.",
        "platform": "instagram", "duration_seconds": 8, "aspect_ratio": "9:16",
        "quality_tier": "draft",
    })
    demo = {"workspace_id": ws["id"], "api_key": key, "characters": [manual["id"], auto["id"]],
            "video_id": video["id"]}
    path.write_text(json.dumps(demo))
    return demo


def wait_video(stack: Stack, demo: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        video: dict[str, Any] = call_api(
            "GET", f"{stack.api_url}/v1/videos/{demo['video_id']}", demo["api_key"])
        if video["status"] in ("ready", "approved", "rejected", "failed", "canceled"):
            return video
        if time.monotonic() > deadline:
            return video
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack")
    parser.add_argument("command", choices=("up", "down", "status", "run"))
    args = parser.parse_args(argv)
    stack = Stack(
        ROOT / ".run",
        api_port=int(os.environ.get("INFLUGEN_API_PORT", "8080")),
        database_url=os.environ.get("DATABASE_URL") or None,
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        topic_partitions=int(os.environ.get("INFLUGEN_TOPIC_PARTITIONS", "6")),
    )
    if args.command == "status":
        running = True
        for name, pid in stack.status().items():
            external = (name == "kafka" and stack.external_kafka) or (
                name == "postgres" and stack.external_db)
            state = "external" if external else (f"running (pid {pid})" if pid else "stopped")
            running = running and bool(pid or external)
            print(f"{name:10} {state}")
        return 0 if running else 3
    if args.command == "down":
        stack.down()
        print("stack stopped")
        return 0
    started = time.monotonic()
    stack.up()
    demo = ensure_demo(stack)
    env = stack.write_env(demo["api_key"])
    print(f"stack up in {time.monotonic() - started:.1f}s; settings in {env}")
    print(f"web page:      {stack.api_url}/")
    print(f"API reference: {stack.api_url}/docs")
    print(f"demo API key:  {demo['api_key']}")
    video = wait_video(stack, demo)
    media = video.get("media") or {}
    print(f"demo video:    {media.get('video_url', '(status ' + video['status'] + ')')}")
    if args.command == "run":
        print("Ctrl-C stops everything.")
        # Ctrl-C, and also SIGINT when started in the background (where a shell ignores it)
        # or SIGTERM from a supervisor: leave through `finally`, which stops the stack.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(1)
                for name in SERVICES:
                    if stack.service_pid(name) is None:
                        print(f"{name} exited; restarting (log: {stack.logs / (name + '.log')})")
                        stack.start_service(name)
        except KeyboardInterrupt:
            print("\nstopping")
        finally:
            stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
