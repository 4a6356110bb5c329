"""A real single-node Apache Kafka broker (KRaft) assembled from Maven Central.

`deploy/kafka/fetch.sh` copies kafka_2.13 and its runtime dependencies into a cache
outside the repository; this module formats the storage (`kafka.tools.StorageTool format
--standalone`), starts `kafka.Kafka` with plain `java` on loopback, and waits until the
broker answers a metadata request.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.proc import pid_alive, running_pid, terminate

ROOT = Path(__file__).resolve().parent.parent
KAFKA_DIR = ROOT / "deploy" / "kafka"


def fetch_jars() -> Path:
    """Return the directory of broker jars, downloading them through Maven when missing."""
    out = subprocess.run(
        ["bash", str(KAFKA_DIR / "fetch.sh")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"fetching the Kafka jars failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


#: The broker's JVM. C1 only (`TieredStopAtLevel=1`): the C2 compiler's work for a broker
#: that lives minutes (a dev stack, a test session, a benchmark) costs more than its faster
#: code saves. Measured on 2 cores under the pipeline's load: with C2, its compiler threads
#: took 19% of a core in the first minute, 13% in the third and 5% in the fifth, the broker
#: 42 -> 26% in all; with C1 only, 26-28% from the start (request threads 21-24% against
#: 14-17% with C2's code), and 5% at idle against 9-15%.
JVM_OPTIONS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true")


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("java not found: Kafka 4 needs Java 17 or newer")
    return found


@dataclass
class LocalKafka:
    """One broker+controller under `base_dir`, listening on 127.0.0.1:`port`."""

    base_dir: Path
    port: int
    controller_port: int
    heap: str = "512m"
    pid_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.pid_path or self.base_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "kafka.log"

    def _properties(self) -> Path:
        path = self.base_dir / "server.properties"
        path.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.base_dir / 'data'}",
                    "num.partitions=6",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # After a kill -9 the restarted broker waits for its old registration's
                    # session to expire: 9 s by default, 4 s here (the heartbeat goes over
                    # loopback to the controller in the same process). Measured restart
                    # after kill -9: 12.4 s -> 6.7 s.
                    "broker.session.timeout.ms=4000",
                    "broker.heartbeat.interval.ms=1000",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        return path

    def pid(self) -> int | None:
        return running_pid(self.pid_file)

    def start(self, timeout: float = 90) -> int:
        """Start the broker unless it runs already; return its pid once it answers metadata."""
        pid = self.pid()
        if pid is not None:
            wait_ready(self.bootstrap, timeout)
            return pid
        libs = fetch_jars()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        classpath = f"{libs}/*"
        java = _java()
        log4j = f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}"
        if not (self.base_dir / "data" / "meta.properties").exists():
            fmt = subprocess.run(
                [java, log4j, "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "--standalone", "-t", str(uuid.uuid4()), "-c", str(props)],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise RuntimeError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", *JVM_OPTIONS, log4j,
                 "-cp", classpath, "kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.base_dir,
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            wait_ready(self.bootstrap, timeout, pid=proc.pid)
        except Exception as exc:
            tail = self.log_file.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"Kafka did not become ready: {exc}\n--- kafka.log ---\n{tail}"
            ) from exc
        return proc.pid

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            terminate(pid, timeout=30)
        self.pid_file.unlink(missing_ok=True)


async def _metadata_ok(bootstrap: str) -> bool:
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "Unable connect" while starting

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0
    except Exception:
        return False
    finally:
        await admin.close()


def wait_ready(bootstrap: str, timeout: float = 90, pid: int | None = None) -> None:
    """Block until the broker answers a metadata request with a broker and a controller."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise RuntimeError("the broker process exited")
        if asyncio.run(_metadata_ok(bootstrap)):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no metadata answer from {bootstrap} within {timeout}s")
