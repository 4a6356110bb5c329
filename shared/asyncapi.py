"""The AsyncAPI document of the topics, generated from the code with FastStream.

Publishers: every event each service emits, with its payload model (the outbox relay sends
them; these named publisher objects are how the document says who emits what).
Subscribers: the services' own `register` functions, run against a broker that never
connects. `python -m shared.asyncapi` prints the document; `/asyncapi.json` serves it."""

from __future__ import annotations

import json
from typing import Any, cast

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from shared.events import (
    TOPIC_COMPLETED,
    TOPIC_DLQ,
    TOPIC_GENERATED,
    TOPIC_JOBS,
    TOPIC_REJECTED,
    TOPIC_REQUESTED,
    DeadLetter,
    VideoCompleted,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
    VideoJobQueued,
    VideoRequested,
    VideoRequestRejected,
)

#: (topic, producer, event type, payload model, description)
EMITTED: list[tuple[str, str, str, type[BaseModel], str]] = [
    (TOPIC_REQUESTED, "upstream systems", "video.requested", VideoRequested,
     "A video request: the envelope, request_id (the idempotency key) and the fields of "
     "POST /v1/videos."),
    (TOPIC_REJECTED, "api", "video.rejected", VideoRequestRejected,
     "A request event that broke a rule, with every error."),
    (TOPIC_JOBS, "api", "video.job.queued", VideoJobQueued,
     "A committed content item and job: everything the generator needs."),
    (TOPIC_GENERATED, "generator", "video.generation.succeeded", VideoGenerationSucceeded,
     "Stored, checked media of a job."),
    (TOPIC_GENERATED, "generator", "video.generation.failed", VideoGenerationFailed,
     "A job that failed (code, message, retryable), was canceled, or passed its deadline."),
    (TOPIC_COMPLETED, "finalizer, api (reviews)", "video.ready | video.approved | "
     "video.rejected | video.failed | video.canceled", VideoCompleted,
     "A video's final state with the whole video resource; event_id is stable per video and "
     "type, so subscribers can deduplicate."),
    (TOPIC_DLQ, "any consumer", "message.dead_lettered", DeadLetter,
     "A message a consumer could not parse: the reason and the original bytes (base64)."),
]


def build() -> dict[str, Any]:
    from services.api import consumer as api_consumer
    from services.finalizer import consumer as finalizer_consumer
    from services.generator import consumer as generator_consumer

    broker = KafkaBroker("kafka:9092")  # never started: only describes
    for topic, producer, event_type, model, description in EMITTED:
        broker.publisher(topic, title=f"{producer}: {event_type}", description=description,
                         schema=model)
    nothing = cast(Any, None)  # registering only builds closures; nothing is called
    api_consumer.register(broker, deps=cast(Any, type("Deps", (), {"pool": None})),
                          group_id="influgen-api", fetch_max_wait_ms=10)
    generator_consumer.register(broker, pool=nothing,
                                worker=cast(Any, type("W", (), {"wake": None})),
                                flusher=nothing, group_id="influgen-generator",
                                fetch_max_wait_ms=10)
    finalizer_consumer.register(broker, pool=nothing, catalog=nothing,
                                group_id="influgen-finalizer", fetch_max_wait_ms=10)
    finalizer_consumer.register_webhooks(broker, pool=nothing,
                                         sender=cast(Any, type("S", (), {"wake": None})),
                                         group_id="influgen-webhooks",
                                         fetch_max_wait_ms=10)
    spec = AsyncAPI(broker, title="Influgen video generation events", version="1.0.0",
                    description="Topics, producers, consumers and payloads.").to_specification()
    document: dict[str, Any] = json.loads(spec.to_json())
    return document


if __name__ == "__main__":
    print(json.dumps(build(), indent=2, sort_keys=True))
