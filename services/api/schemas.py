"""Request and response models of the HTTP API. The views parse and serialise with these,
and `/openapi.json` is generated from them, so the document cannot drift from the code."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from services.api.validation import OUT_OF_RANGE, VideoRequest, not_blank
from shared.events import (
    AspectRatio,
    CompletedType,
    FieldError,
    Platform,
    ReviewMode,
    SceneFeedback,
    Text,
    VideoResource,
    VideoStatus,
)
from shared.urls import http_url

__all__ = ["VideoRequest", "VideoResource"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: A name or reason: stored without surrounding whitespace, and not only whitespace.
Name = Annotated[Text, AfterValidator(not_blank)]
#: A URL someone will fetch: http(s), with a host and a usable port.
HttpUrl = Annotated[Text, Field(max_length=2000), AfterValidator(http_url)]


class WorkspaceIn(Strict):
    name: Name = Field(max_length=200)
    credits: int = Field(default=0, ge=0, le=1_000_000_000)
    sandbox: bool = False


class WorkspaceCreated(BaseModel):
    id: UUID
    name: str
    api_key: str = Field(description="Shown once; only its hash is stored.")
    credits_balance: int
    sandbox: bool


class CreditsIn(Strict):
    amount: int = Field(gt=0, le=1_000_000_000)
    reason: Name = Field(max_length=500)


class CharacterIn(Strict):
    name: Name = Field(max_length=200)
    review_mode: ReviewMode = "manual"
    reference_image_url: HttpUrl | None = None


class CharacterPatch(Strict):
    """The fields given are changed; `reference_image_url: null` removes the image."""

    name: Name | None = Field(default=None, max_length=200)
    review_mode: ReviewMode | None = None
    reference_image_url: HttpUrl | None = None

    @field_validator("name", "review_mode")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        if value is None:  # only when given: a default is not validated
            raise ValueError("must not be null (leave it out to keep it)")
        return value


class Character(BaseModel):
    id: UUID
    name: str
    review_mode: ReviewMode
    reference_image_url: str | None
    created_at: datetime
    updated_at: datetime


class CharacterList(BaseModel):
    items: list[Character]


class LedgerEntry(BaseModel):
    id: int
    kind: Literal["grant", "reserve", "charge", "release"]
    amount: int
    job_id: UUID | None
    reason: str | None
    created_at: datetime


class Credits(BaseModel):
    balance: int = Field(description="grants - charges")
    reserved: int = Field(description="open reservations")
    available: int = Field(description="balance - reserved; never negative")
    ledger: list[LedgerEntry] = Field(default_factory=list, description="newest first")


class WorkspaceInfo(BaseModel):
    """A workspace as its operator sees it (the API key is never shown again)."""

    id: UUID
    name: str
    sandbox: bool
    created_at: datetime
    credits: Credits


class WorkspaceQuery(Strict):
    name: Text | None = Field(default=None, min_length=1, max_length=200,
                             description="only workspaces whose name contains this "
                             "(case-insensitive)")
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = None


class WorkspaceSummary(BaseModel):
    id: UUID
    name: str
    sandbox: bool
    created_at: datetime
    balance: int
    reserved: int
    available: int


class WorkspaceList(BaseModel):
    items: list[WorkspaceSummary]
    next_cursor: str | None


class TierInfo(BaseModel):
    credits_per_second: float
    short_side: int
    resolutions: dict[str, str]


class ModelInfo(BaseModel):
    id: str
    provider: str
    description: str
    default: bool
    fps: int
    durations: dict[str, int]
    aspect_ratios: list[AspectRatio]
    tiers: dict[str, TierInfo]


class ModelList(BaseModel):
    default_model: str
    items: list[ModelInfo]


class CreateQuery(Strict):
    dry_run: bool = Field(default=False, description="judge, quote and give scene feedback; "
                          "store nothing (true/false, 1/0, yes/no)")


class VideoQuery(Strict):
    status: VideoStatus | None = None
    character_id: UUID | None = None
    platform: Platform | None = None
    planned_from: datetime | date | None = None
    planned_to: datetime | date | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = None

    @field_validator("planned_from", "planned_to", mode="wrap")
    @classmethod
    def _when(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> datetime | date | None:
        """One error for a value that is neither (the union's two said the same thing,
        under `planned_from.datetime` and `planned_from.date`)."""
        try:
            when: datetime | date | None = handler(value)
        except ValidationError:
            raise ValueError("must be a date (YYYY-MM-DD) or an ISO 8601 date-time") from None
        if isinstance(when, datetime) and when.tzinfo is not None:
            try:
                when.astimezone(UTC)  # as the database driver sends it
            except OverflowError:
                raise ValueError(OUT_OF_RANGE) from None
        return when


class VideoList(BaseModel):
    items: list[VideoResource]
    next_cursor: str | None


class DryRunQuote(BaseModel):
    quoted: int


class DryRun(BaseModel):
    valid: bool
    request: dict[str, Any] = Field(description="The request with every default applied.")
    credits: DryRunQuote
    scene_feedback: SceneFeedback


class ReviewIn(Strict):
    decision: Literal["approve", "reject"]
    note: Text | None = Field(default=None, max_length=2000)


class WebhookIn(Strict):
    url: Text = Field(min_length=1, max_length=2000)
    event_types: list[CompletedType] = Field(
        default_factory=list, description="Completion event types to receive; empty: all")


class Webhook(BaseModel):
    id: UUID
    url: str
    event_types: list[CompletedType]
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="Shown once: verify signatures with it")


class WebhookSecret(BaseModel):
    id: UUID
    secret: str = Field(description="Shown once: the endpoint's new secret")
    previous_secret_expires_at: datetime = Field(
        description="Until then deliveries are signed with the secret just replaced as well "
        "(and with those replaced before it, each until 24 hours after its replacement)")


class WebhookList(BaseModel):
    items: list[Webhook]


class WebhookAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDelivery(BaseModel):
    id: UUID
    event_id: UUID
    event_type: str
    state: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[WebhookAttempt]


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDelivery]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, str] | None = None
