"""The video request contract (SPEC section 2): every rule, every error at once.

One code path for `POST /v1/videos` and the `video.requested` event. Field rules are a
pydantic model; the rules that depend on other fields or on the catalog run afterwards on
whatever parsed, so a request with several problems gets all of them named.

Numbers are strict: `duration_seconds` must be a JSON integer; "8" and 8.5 are rejected
rather than coerced, so a client bug is reported instead of silently rounded.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from shared.catalog import Catalog, ModelEntry
from shared.events import AspectRatio, FieldError, Platform, QualityTier, Text, VideoType

#: Which content types each platform takes, and the default type.
PLATFORM_TYPES: dict[str, tuple[str, ...]] = {
    "instagram": ("reel", "story"),
    "tiktok": ("short",),
    "youtube": ("short",),
}
DEFAULT_TYPE: dict[str, str] = {"instagram": "reel", "tiktok": "short", "youtube": "short"}

_HASHTAG = re.compile(r"^#?\w+$")
#: Characters per hashtag, with its `#`. With the other fields' limits this keeps a video's
#: resource, and so its events, to kilobytes: a megabyte of hashtags made a completion event
#: larger than a Kafka record may be.
MAX_HASHTAG = 100
#: Errors a rejection names at most (then one saying how many more): a request event of a
#: megabyte of unknown fields would otherwise make a rejection larger than a Kafka record.
MAX_ERRORS = 100
#: For an instant outside the years 1 to 9999 in UTC: PostgreSQL stores it, but Python (and
#: so the driver) cannot hold it, to send or to read back.
OUT_OF_RANGE = "must be in the years 1 to 9999 in UTC"


def not_blank(value: str) -> str:
    """`value` without surrounding whitespace; ValueError if nothing else is left."""
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


class VideoRequest(BaseModel):
    """The body of `POST /v1/videos`, and the section-2 fields of a request event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    character_id: UUID
    scene_description: Text
    platform: Platform = "instagram"
    type: VideoType | None = None
    planned_date: Annotated[str, Field(max_length=64)] | None = None
    caption: Annotated[Text, Field(max_length=2200)] | None = None
    hashtags: Annotated[list[Annotated[str, Field(max_length=MAX_HASHTAG)]],
                        Field(max_length=30)] = Field(default_factory=list)
    cta: Annotated[Text, Field(max_length=200)] | None = None
    duration_seconds: Annotated[StrictInt, Field(ge=5, le=60)] = 8
    aspect_ratio: AspectRatio = "9:16"
    model_id: Annotated[str, Field(max_length=100)] | None = None
    quality_tier: QualityTier = "standard"

    @field_validator("scene_description")
    @classmethod
    def _scene(cls, value: str) -> str:
        value = not_blank(value)
        if len(value) > 2000:
            raise ValueError(f"must be at most 2,000 characters (got {len(value):,})")
        return value

    @field_validator("hashtags")
    @classmethod
    def _hashtags(cls, tags: list[str]) -> list[str]:
        bad = [t for t in tags if not _HASHTAG.match(t) or t == "#"]
        if bad:
            raise ValueError(
                "each hashtag may contain only letters, digits and _ (an optional leading #); "
                f"invalid: {', '.join(repr(b) for b in bad[:5])}"
            )
        return [t.removeprefix("#") for t in tags]

    @field_validator("planned_date")
    @classmethod
    def _planned(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            planned_at(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 date (2026-12-01) or date-time") from None
        except OverflowError:  # stored as a UTC instant
            raise ValueError(OUT_OF_RANGE) from None
        return value


class ValidRequest(BaseModel):
    """A request that passed every rule, with every default applied."""

    model_config = ConfigDict(frozen=True)

    request: VideoRequest
    type: VideoType
    model: ModelEntry

    @property
    def quote(self) -> int:
        return self.model.quote(self.request.quality_tier, self.request.duration_seconds)


class RequestInvalid(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        if len(errors) > MAX_ERRORS:
            errors = [*errors[:MAX_ERRORS], FieldError(
                field="body", message=f"and {len(errors) - MAX_ERRORS:,} more errors")]
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


def error_location(loc: tuple[int | str, ...]) -> str:
    """`a.b[2]` for pydantic's location; a NUL in a key (an unknown field's name) is written
    as `\\u0000`, since the errors of a Kafka request are stored with its outcome."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part.replace("\x00", "\\u0000")
            if len(name) > 100:  # an unknown field's name, which may be any length
                name = name[:100] + "…"
            out += f".{name}" if out else name
    return out or "body"


def error_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "this field is required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def validate_request(body: object, catalog: Catalog) -> ValidRequest:
    """Judge a request body; raise RequestInvalid naming every offending field."""
    if not isinstance(body, dict):
        raise RequestInvalid([FieldError(field="body", message="must be a JSON object")])
    errors: list[FieldError] = []
    parsed: VideoRequest | None = None
    try:
        parsed = VideoRequest.model_validate(body)
    except ValidationError as exc:
        errors.extend(
            FieldError(field=error_location(e["loc"]), message=error_message(e))
            for e in exc.errors()
        )
    failed = {e.field.split("[")[0].split(".")[0] for e in errors}

    def raw(name: str, default: Any) -> Any:
        return default if name in failed else body.get(name, default)

    platform = raw("platform", "instagram")
    kind = raw("type", None)
    if platform in PLATFORM_TYPES and kind is not None and "type" not in failed:
        allowed = PLATFORM_TYPES[platform]
        if kind not in allowed:
            errors.append(FieldError(
                field="type",
                message=f"{kind!r} does not fit platform {platform!r}; use "
                + " or ".join(repr(a) for a in allowed),
            ))
    model_id = raw("model_id", None) or catalog.default_model
    model = catalog.get(model_id) if isinstance(model_id, str) else None
    if model is None and "model_id" not in failed:
        errors.append(FieldError(
            field="model_id",
            message=f"unknown model {model_id!r}; see GET /v1/models",
        ))
    if model is not None:
        tier = raw("quality_tier", "standard")
        if "quality_tier" not in failed and tier not in model.tiers:
            errors.append(FieldError(
                field="quality_tier",
                message=f"model {model.id!r} offers {', '.join(model.tiers)}, not {tier!r}",
            ))
        duration = raw("duration_seconds", 8)
        if "duration_seconds" not in failed and not (
            model.min_duration_seconds <= duration <= model.max_duration_seconds
        ):
            errors.append(FieldError(
                field="duration_seconds",
                message=f"model {model.id!r} supports {model.min_duration_seconds} to "
                f"{model.max_duration_seconds} seconds",
            ))
        aspect = raw("aspect_ratio", "9:16")
        if "aspect_ratio" not in failed and aspect not in model.aspect_ratios:
            errors.append(FieldError(
                field="aspect_ratio",
                message=f"model {model.id!r} supports {', '.join(model.aspect_ratios)}",
            ))
    if errors or parsed is None or model is None:
        raise RequestInvalid(errors)
    video_type = parsed.type or DEFAULT_TYPE[parsed.platform]
    return ValidRequest(request=parsed, type=video_type, model=model)


def planned_at(value: str | None) -> datetime | None:
    """The planned date as a UTC timestamp for filtering (a date means its midnight, UTC;
    a date-time without an offset is taken as UTC). Raises ValueError for what is not ISO
    8601 and OverflowError for an instant outside the years 1 to 9999 in UTC, which
    PostgreSQL would store but Python could not read back."""
    if value is None:
        return None
    if "T" in value or " " in value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.combine(date.fromisoformat(value), time(0, 0), tzinfo=UTC)
