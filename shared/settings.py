"""Settings: read from the environment once, by pydantic settings classes.

`CommonSettings` holds what every service needs; each service subclasses it in its own
`settings.py`. Nothing else in the code reads `os.environ`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFLUGEN_", extra="ignore")

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5433/influgen",
        validation_alias=AliasChoices("DATABASE_URL", "INFLUGEN_DATABASE_URL"),
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "INFLUGEN_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    db_pool_min: int = 1
    db_pool_max: int = 10
    #: Public base URL of the api service; media URLs are built from it.
    public_url: str = "http://127.0.0.1:8080"
    media_dir: Path = ROOT / ".run" / "media"
    catalog_path: Path = ROOT / "deploy" / "catalog.json"
    #: How long the broker holds a consumer's fetch while it has no data for it (data on any
    #: partition ends the wait). 100 ms: the same latency as 10 ms at 5-200 jobs/s, a third
    #: to half of the idle CPU (README, Decisions).
    kafka_fetch_max_wait_ms: int = 100
    #: Let webhooks go to private and loopback addresses (off in production).
    webhook_allow_private: bool = False
    log_level: str = "INFO"
    #: Written once the service consumes and serves (its consumers have joined their
    #: groups); `make up` waits for it. None: not written.
    ready_file: Path | None = None
    #: This process's name among the replicas of its service, stable across its restarts
    #: (`make up`: api-1, generator-1, finalizer-1; a StatefulSet: the pod name). It makes
    #: the Kafka consumers static members, so a restarted process takes its partitions back
    #: at once, and names the generator's leases. Empty: dynamic members, host:pid leases.
    #: Two live processes must never share one.
    instance_id: str = ""
