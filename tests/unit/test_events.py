"""The event contract refuses what the database cannot store, so that such a message goes to
the DLQ instead of failing its write at every redelivery (and stalling its partition)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import TypeAdapter, ValidationError

from services.generator.providers.base import MAX_MESSAGE, MAX_RETRY_AFTER, ProviderError
from shared.events import GenerationEvent, JobError, JobSpec, VideoJobQueued, VideoRequested
from shared.kafka import MAX_DEAD_KEY, MAX_DEAD_ORIGINAL, dead_letter

GENERATED: TypeAdapter[Any] = TypeAdapter(GenerationEvent)


def succeeded(**media: Any) -> dict[str, Any]:
    return {"event_type": "video.generation.succeeded", "workspace_id": str(uuid4()),
            "correlation_id": "c", "job_id": str(uuid4()), "video_id": str(uuid4()),
            "provider": "sandbox",
            "media": {"video_url": "/media/v.mp4", "thumbnail_url": "/media/v.jpg",
                      "duration_seconds": 5.0, "aspect_ratio": "9:16", "width": 144,
                      "height": 256, **media}}


def spec(**changes: Any) -> dict[str, Any]:
    return {"job_id": str(uuid4()), "video_id": str(uuid4()), "provider": "sandbox",
            "model_id": "sandbox-clip", "quality_tier": "standard", "width": 144,
            "height": 256, "fps": 8, "duration_seconds": 5, "aspect_ratio": "9:16",
            "platform": "tiktok", "type": "short", "scene_description": "a scene",
            "character_id": str(uuid4()), "character_name": "Mila",
            "deadline_at": datetime.now(UTC).isoformat(), **changes}


def test_a_valid_generation_event_is_read() -> None:
    event = GENERATED.validate_json(json.dumps(succeeded()))
    assert event.media.video_url == "/media/v.mp4"


@pytest.mark.parametrize("raw", [
    # NaN and Infinity parse from JSON into a float, which jsonb cannot hold.
    json.dumps(succeeded()).replace('"duration_seconds": 5.0', '"duration_seconds": NaN'),
    json.dumps(succeeded()).replace('"duration_seconds": 5.0', '"duration_seconds": Infinity'),
    json.dumps(succeeded(video_url="/media/\x00.mp4")),
    json.dumps({**succeeded(), "provider": "\x00"}),
    json.dumps({**succeeded(), "correlation_id": "c\x00"}),
    json.dumps({**{k: v for k, v in succeeded().items() if k != "media"},
                "event_type": "video.generation.failed",
                "error": {"code": "x", "message": "bad\x00", "retryable": False}}),
])
def test_what_the_database_cannot_store_is_not_a_generation_event(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        GENERATED.validate_json(raw)
    assert any(word in str(info.value) for word in ("NUL", "finite"))


@pytest.mark.parametrize("media", [
    {"duration_seconds": -5.0}, {"duration_seconds": 0}, {"duration_seconds": 1e9},
    {"width": 0}, {"height": -1}, {"width": 10**12},
])
def test_a_success_with_media_no_video_has_is_not_a_generation_event(
    media: dict[str, Any]
) -> None:
    """A forged success with a negative duration was settled with a negative charge (the
    workspace gained credits); one with a width past PostgreSQL's integer, refused by it."""
    with pytest.raises(ValidationError):
        GENERATED.validate_json(json.dumps(succeeded(**media)))


@pytest.mark.parametrize("changes", [{"fps": 0}, {"width": 10**12}, {"duration_seconds": 0},
                                     {"duration_seconds": 10**9}])
def test_a_job_spec_no_video_can_have_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(**changes))


@pytest.mark.parametrize("field", ["scene_description", "character_name", "provider",
                                   "reference_image_url"])
def test_a_job_spec_with_a_nul_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        VideoJobQueued.model_validate({"workspace_id": str(uuid4()), "correlation_id": "c",
                                       "job": spec(**{field: "a\x00"})})
    assert JobSpec.model_validate(spec()).character_name == "Mila"


@pytest.mark.parametrize("field", ["request_id", "correlation_id"])
def test_a_request_envelope_with_a_nul_is_refused(field: str) -> None:
    raw = {"workspace_id": str(uuid4()), "request_id": "r", field: "r\x00"}
    with pytest.raises(ValidationError, match="NUL"):
        VideoRequested.model_validate_json(json.dumps(raw))


@pytest.mark.parametrize("field", ["request_id", "correlation_id"])
def test_a_request_envelope_id_is_at_most_200_characters(field: str) -> None:
    """The rejection carries both: bounded, one always fits in a Kafka record."""
    raw = {"workspace_id": str(uuid4()), "request_id": "r", field: "r" * 201}
    with pytest.raises(ValidationError, match="at most 200"):
        VideoRequested.model_validate_json(json.dumps(raw))
    raw[field] = "r" * 200
    assert VideoRequested.model_validate_json(json.dumps(raw))


def test_a_providers_error_message_is_kept_to_what_an_event_carries() -> None:
    exc = ProviderError("c" * 500, "m" * 3_000_000, retryable=True)
    assert (len(exc.code), exc.message) == (100, "m" * MAX_MESSAGE + "…")


def test_a_providers_nul_becomes_a_replacement_character() -> None:
    """A provider's error text ends in the job's stored error: it must be storable."""
    exc = ProviderError("bad\x00code", "it\x00failed", retryable=False)
    error = JobError(code=exc.code, message=exc.message, retryable=exc.retryable)
    assert (error.code, error.message) == ("bad\ufffdcode", "it\ufffdfailed")


@pytest.mark.parametrize(("given", "kept"), [
    (None, None), (0.0, 0.0), (2.5, 2.5), (-1.0, None), (float("nan"), None),
    (float("inf"), None), (1e9, MAX_RETRY_AFTER),
])
def test_a_providers_retry_after_is_a_usable_wait_or_none(
    given: float | None, kept: float | None
) -> None:
    """The job's retry is stored as `now() + retry_after` seconds, which an infinite wait
    overflows; a NaN or negative one is no wait at all."""
    assert ProviderError("provider_rate_limited", "slow down", retryable=True,
                         retry_after=given).retry_after == kept


def test_a_dead_letter_keeps_the_beginning_of_a_message_too_large_to_carry() -> None:
    """The DLQ's record must fit where the message came from (1 MiB); base64 adds a third."""
    letter = dead_letter(consumer="api", topic="t", partition=0, offset=1,
                         key=b"k" * 5000, value=b"v" * 900_000, reason="r")
    assert len(letter.model_dump_json()) < 512 * 1024
    assert base64.b64decode(letter.original_value_b64) == b"v" * MAX_DEAD_ORIGINAL
    assert base64.b64decode(letter.original_key_b64 or "") == b"k" * MAX_DEAD_KEY
    assert (letter.original_size, letter.original_truncated) == (900_000, True)
    small = dead_letter(consumer="api", topic="t", partition=0, offset=1, key=None,
                        value=b"{", reason="r")
    assert (small.original_value_b64, small.original_size, small.original_truncated) == (
        "ew==", 1, False)


def test_a_dead_letter_written_again_has_the_same_id() -> None:
    """A poison message's letter is written again when a later message of its batch fails
    for a passing reason (the batch is redelivered): readers tell the copies apart from
    letters of other messages by `event_id`, as on the completion topic."""
    def letter(consumer: str = "api", topic: str = "t", partition: int = 0,
               offset: int = 1, reason: str = "r") -> UUID:
        return dead_letter(consumer=consumer, topic=topic, partition=partition, offset=offset,
                           key=None, value=b"{", reason=reason).event_id

    assert letter() == letter(reason="another try")
    others = {letter(consumer="generator"), letter(topic="u"), letter(partition=1),
              letter(offset=2), letter()}
    assert len(others) == 5
