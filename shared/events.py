"""The message contract: every Kafka topic and every event payload, in one module.

Services import these models; nobody redefines a payload. Events are past-tense, flat and
carry no behaviour. Every message has the envelope fields of SPEC section 7.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, FiniteFloat, StrictInt

TOPIC_REQUESTED = "influgen.video.requested.v1"
TOPIC_REJECTED = "influgen.video.rejected.v1"
TOPIC_JOBS = "influgen.video.jobs.v1"
TOPIC_GENERATED = "influgen.video.generated.v1"
TOPIC_COMPLETED = "influgen.video.completed.v1"
TOPIC_DLQ = "influgen.video.dlq.v1"
ALL_TOPICS = (
    TOPIC_REQUESTED, TOPIC_REJECTED, TOPIC_JOBS, TOPIC_GENERATED, TOPIC_COMPLETED, TOPIC_DLQ,
)

Platform = Literal["instagram", "tiktok", "youtube"]
VideoType = Literal["reel", "story", "short"]
AspectRatio = Literal["9:16", "1:1", "16:9"]
QualityTier = Literal["draft", "standard", "premium"]
ReviewMode = Literal["manual", "autopilot"]
VideoStatus = Literal["queued", "generating", "ready", "approved", "rejected", "failed", "canceled"]
ReviewState = Literal["ready", "approved", "rejected"]
JobState = Literal["queued", "submitted", "running", "succeeded", "failed", "canceled"]
#: Generation is over in these (a `ready` video waits for a reviewer, not for the pipeline).
FINAL_STATUSES: frozenset[str] = frozenset({"ready", "approved", "rejected", "failed", "canceled"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


#: A string PostgreSQL can store: its text and jsonb types cannot hold U+0000, and a write
#: with one fails whole (for a Kafka message, at every redelivery, stalling its partition).
#: Every string of a request or an incoming event that may reach the database is `Text`, so
#: that such input is refused with the field named (a 422, a rejection or the DLQ).
Text = Annotated[str, AfterValidator(_storable)]


#: A frame's side in pixels, a frame rate, a duration in seconds: what a video can have
#: (a negative duration reported by a forged success was charged as a negative amount).
Pixels = Annotated[int, Field(ge=1, le=8192)]
Fps = Annotated[int, Field(ge=1, le=240)]
Seconds = Annotated[FiniteFloat, Field(gt=0, le=3600)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldError(Frozen):
    field: str
    message: str


class JobError(Frozen):
    code: Text
    message: Text
    retryable: bool


class Media(Frozen):
    video_url: Text
    thumbnail_url: Text
    duration_seconds: Seconds  # finite: JSON has no NaN, so jsonb cannot store one
    aspect_ratio: AspectRatio
    width: Pixels
    height: Pixels


class Envelope(Frozen):
    event_id: UUID = Field(default_factory=uuid4)
    event_type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    workspace_id: UUID
    correlation_id: Text


# --- influgen.video.requested.v1 (upstream systems -> api) -------------------------------

class VideoRequested(Frozen):
    """A request event. Its section-2 fields are validated by the api with the same code as
    `POST /v1/videos`; this model only fixes the envelope. Unknown fields are judged there."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event_id: UUID = Field(default_factory=uuid4)
    event_type: Literal["video.requested"] = "video.requested"
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    workspace_id: UUID
    #: carried by the rejection: bounded like `request_id`, so that one always fits in a
    #: Kafka record
    correlation_id: Annotated[Text, Field(max_length=200)] | None = None
    request_id: Annotated[Text, Field(min_length=1, max_length=200)]


# --- influgen.video.rejected.v1 (api) -----------------------------------------------------

class VideoRequestRejected(Envelope):
    event_type: Literal["video.rejected"] = "video.rejected"
    request_id: str
    errors: list[FieldError]


# --- influgen.video.jobs.v1 (api -> generator) ---------------------------------------------

class JobSpec(Frozen):
    """Everything the generator needs to produce one video."""

    job_id: UUID
    video_id: UUID
    provider: Text
    model_id: Text
    provider_model: Text | None = None
    quality_tier: QualityTier
    width: Pixels
    height: Pixels
    fps: Fps
    duration_seconds: Annotated[StrictInt, Field(ge=1, le=3600)]
    aspect_ratio: AspectRatio
    platform: Platform
    type: VideoType
    scene_description: Text
    character_id: UUID
    character_name: Text
    reference_image_url: Text | None = None
    deadline_at: datetime


class VideoJobQueued(Envelope):
    event_type: Literal["video.job.queued"] = "video.job.queued"
    job: JobSpec


# --- influgen.video.generated.v1 (generator -> finalizer) ---------------------------------

class VideoGenerationSucceeded(Envelope):
    event_type: Literal["video.generation.succeeded"] = "video.generation.succeeded"
    job_id: UUID
    video_id: UUID
    provider: Text
    media: Media


class VideoGenerationFailed(Envelope):
    event_type: Literal["video.generation.failed"] = "video.generation.failed"
    job_id: UUID
    video_id: UUID
    provider: Text
    error: JobError
    canceled: bool = False


GenerationEvent = Annotated[
    VideoGenerationSucceeded | VideoGenerationFailed, Field(discriminator="event_type")
]


# --- influgen.video.completed.v1 (finalizer, and the api for reviews) --------------------

class JobView(Frozen):
    id: UUID
    state: JobState
    attempts: int
    progress: int
    queue_position: int | None
    provider: str
    error: JobError | None


class CreditsView(Frozen):
    quoted: int
    reserved: int
    charged: int | None


class SceneFeedback(Frozen):
    present: list[str]
    missing: list[str]
    hints: dict[str, str]


class VideoResource(Frozen):
    id: UUID
    character_id: UUID
    status: VideoStatus
    review_state: ReviewState | None
    platform: Platform
    type: VideoType
    scene_description: str
    planned_date: str | None
    caption: str | None
    hashtags: list[str]
    cta: str | None
    duration_seconds: int
    aspect_ratio: AspectRatio
    model_id: str
    quality_tier: QualityTier
    job: JobView
    media: Media | None
    credits: CreditsView
    scene_feedback: SceneFeedback
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


CompletedType = Literal[
    "video.ready", "video.approved", "video.rejected", "video.failed", "video.canceled"
]


class VideoCompleted(Envelope):
    event_type: CompletedType
    video: VideoResource


# --- influgen.video.dlq.v1 (any consumer) --------------------------------------------------

class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID = Field(
        default_factory=uuid4,
        description="derived from the consumer, topic, partition and offset of the message: "
        "a letter written again (its batch redelivered) has the same id")
    event_type: Literal["message.dead_lettered"] = "message.dead_lettered"
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    workspace_id: UUID | None = None
    correlation_id: str | None = None
    consumer: str
    source_topic: str
    partition: int
    offset: int
    reason: str
    original_key_b64: str | None
    original_value_b64: str
    #: the original value's length in bytes; past `shared.kafka.MAX_DEAD_ORIGINAL` only its
    #: beginning is kept (and past `MAX_DEAD_KEY`, the key's), so that the letter itself
    #: fits in a Kafka record
    original_size: int
    original_truncated: bool = False
