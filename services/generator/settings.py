from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import CommonSettings


class GeneratorSettings(CommonSettings):
    consumer_group: str = "influgen-generator"
    #: Jobs one generator process drives at once, per provider: `concurrency` for the local
    #: renderer (CPU work; about one per render process and core) and any provider not named
    #: in `provider_concurrency` (JSON, e.g. {"replicate": 32}): hosted and sandbox jobs
    #: mostly wait, and a slot each would leave them queued behind a few renders.
    concurrency: int = 2
    provider_concurrency: dict[str, int] = Field(
        default_factory=lambda: {"sandbox": 32, "replicate": 32})
    #: Processes rendering `local` videos (CPU work off the event loop).
    render_processes: int = 1
    #: A job whose lease is not renewed for this long is taken over by another process.
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 0.25
    #: libx264 preset of the local renderer.
    x264_preset: str = "veryfast"
    #: Attempts per job before a retryable failure becomes final.
    max_attempts: int = 4
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 60.0
    #: How often a running job renews its lease and looks for a cancel request.
    watch_interval_seconds: float = 1.0
    #: Replicate (the hosted provider); without a token the provider is not configured.
    replicate_api_token: SecretStr = SecretStr("")
    replicate_base_url: str = "https://api.replicate.com"
    replicate_poll_interval_seconds: float = 2.0
    provider_request_timeout_seconds: float = 15.0
    #: Prometheus metrics on http://127.0.0.1:<port>/metrics; 0 turns them off.
    metrics_port: int = 0
