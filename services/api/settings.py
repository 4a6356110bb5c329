from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import CommonSettings


class ApiSettings(CommonSettings):
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    admin_token: SecretStr = SecretStr("")
    #: A job not finished this long after it was queued fails with deadline_exceeded.
    job_deadline_seconds: int = 1800
    consumer_group: str = "influgen-api"
    max_body_bytes: int = 1024 * 1024
    #: How long POST /v1/videos/{id}/cancel waits for the video to be canceled.
    cancel_wait_seconds: float = 5.0
    #: Requests per second per workspace (per api process); 0 turns the limit off.
    rate_limit_per_second: float = 50.0
    rate_limit_burst: float = 100.0
    #: Group commit of new videos: at most this many requests are written together, and at
    #: most this many such batches are written at once. One by default: a second writer split
    #: the same requests into smaller batches (more statements, and batches of a workspace
    #: wait for each other's lock on its row), which cost more on two cores than the overlap
    #: gained, with one workspace or eight (docs/performance.md, 2026-12-02).
    intake_batch_max: int = 128
    intake_batch_concurrency: int = 1
    #: Inbox rows older than this are deleted (hourly). It must exceed the longest a record
    #: stays in a topic, Kafka's `retention.ms` plus `segment.ms` (7 + 7 days by default):
    #: only a record still there can be delivered again.
    inbox_retention_days: float = Field(default=15, gt=0)
    #: The live-status history (`GET /v1/videos/{id}/events`) of videos that are over is
    #: deleted after this long (hourly); a stream of one then shows its state as it is.
    video_events_retention_days: float = Field(default=30, gt=0)
