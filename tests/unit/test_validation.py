from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.validation import (
    DEFAULT_TYPE,
    PLATFORM_TYPES,
    RequestInvalid,
    planned_at,
    validate_request,
)
from shared.catalog import Catalog
from shared.settings import ROOT

CATALOG = Catalog.load(ROOT / "deploy" / "catalog.json")
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"character_id": str(uuid4()), "scene_description": SCENE}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def errors_of(raw: Any) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as info:
        validate_request(raw, CATALOG)
    return {e.field: e.message for e in info.value.errors}


def test_defaults_are_applied() -> None:
    valid = validate_request(body(), CATALOG)
    req = valid.request
    assert (req.platform, valid.type, req.duration_seconds, req.aspect_ratio) == (
        "instagram", "reel", 8, "9:16")
    assert (valid.model.id, req.quality_tier, req.hashtags) == (
        CATALOG.default_model, "standard", [])
    assert valid.quote == 8  # 1 credit/s x 8 s


@pytest.mark.parametrize(("platform", "expected"), [("tiktok", "short"), ("youtube", "short"),
                                                    ("instagram", "reel")])
def test_default_type_follows_platform(platform: str, expected: str) -> None:
    assert validate_request(body(platform=platform), CATALOG).type == expected


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"character_id": ...}, "character_id"),
        ({"scene_description": ...}, "scene_description"),
        ({"character_id": "not-a-uuid"}, "character_id"),
        ({"scene_description": "   \n "}, "scene_description"),
        ({"scene_description": "x" * 2001}, "scene_description"),
        ({"scene_description": 42}, "scene_description"),
        ({"duration_seconds": 4}, "duration_seconds"),
        ({"duration_seconds": 61}, "duration_seconds"),
        ({"duration_seconds": 8.5}, "duration_seconds"),
        ({"duration_seconds": "8"}, "duration_seconds"),
        ({"duration_seconds": True}, "duration_seconds"),
        ({"aspect_ratio": "2:3"}, "aspect_ratio"),
        ({"platform": "myspace"}, "platform"),
        ({"model_id": "no-such-model"}, "model_id"),
        ({"quality_tier": "ultra"}, "quality_tier"),
        ({"model_id": "replicate-video-1", "quality_tier": "draft"}, "quality_tier"),
        ({"model_id": "replicate-video-1", "duration_seconds": 30}, "duration_seconds"),
        ({"model_id": "replicate-video-1", "aspect_ratio": "1:1"}, "aspect_ratio"),
        ({"caption": "c" * 2201}, "caption"),
        ({"cta": "c" * 201}, "cta"),
        ({"hashtags": [f"t{i}" for i in range(31)]}, "hashtags"),
        ({"hashtags": ["two words"]}, "hashtags"),
        ({"hashtags": ["wow!"]}, "hashtags"),
        ({"hashtags": "travel"}, "hashtags"),
        ({"planned_date": "next tuesday"}, "planned_date"),
        ({"planned_date": "2026-13-01"}, "planned_date"),
        # Instants that are not a year 1 to 9999 in UTC (PostgreSQL stores them; Python
        # cannot read them back).
        ({"planned_date": "9999-12-31T23:59:59-14:00"}, "planned_date"),
        ({"planned_date": "0001-01-01T00:00:00+14:00"}, "planned_date"),
        # U+0000, which PostgreSQL's text and jsonb cannot hold.
        ({"scene_description": "a\x00b"}, "scene_description"),
        ({"caption": "\x00"}, "caption"),
        ({"cta": "go\x00"}, "cta"),
        ({"duration": 8}, "duration"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    assert field in errors_of(body(**changes))


@pytest.mark.parametrize(
    ("platform", "kind"),
    [(p, t) for p in PLATFORM_TYPES for t in ("reel", "story", "short")
     if t not in PLATFORM_TYPES[p]],
)
def test_every_platform_type_mismatch_is_rejected(platform: str, kind: str) -> None:
    assert "type" in errors_of(body(platform=platform, type=kind))


def test_every_error_is_reported_at_once() -> None:
    found = errors_of(body(duration_seconds=99, aspect_ratio="2:3", platform="tiktok",
                           type="reel", hashtags=["ok", "not ok"], colour="red"))
    assert {"duration_seconds", "aspect_ratio", "type", "hashtags", "colour"} <= set(found)
    assert found["colour"] == "unknown field"


@pytest.mark.parametrize("raw", [[], "text", 3, None])
def test_body_must_be_an_object(raw: Any) -> None:
    assert errors_of(raw) == {"body": "must be a JSON object"}


def test_hashtags_lose_their_hash_and_dates_are_accepted() -> None:
    valid = validate_request(body(hashtags=["#travel", "hotel_life", "café"],
                                  planned_date="2026-12-01T09:30:00Z"), CATALOG)
    assert valid.request.hashtags == ["travel", "hotel_life", "café"]
    assert validate_request(body(planned_date="2026-12-01"), CATALOG).request.planned_date


def test_explicit_nulls_mean_absent() -> None:
    """Found by schemathesis: `"planned_date": null` crashed the validator."""
    valid = validate_request(body(type=None, planned_date=None, caption=None, cta=None,
                                  model_id=None), CATALOG)
    assert (valid.type, valid.request.planned_date, valid.model.id) == (
        "reel", None, CATALOG.default_model)


@given(st.integers(min_value=-1000, max_value=1000))
def test_duration_range_is_exactly_5_to_60(duration: int) -> None:
    raw = body(duration_seconds=duration)
    if 5 <= duration <= 60:
        assert validate_request(raw, CATALOG).request.duration_seconds == duration
    else:
        assert "duration_seconds" in errors_of(raw)


@given(st.sampled_from(list(PLATFORM_TYPES)), st.sampled_from(["reel", "story", "short", None]))
def test_type_accepted_iff_it_fits_the_platform(platform: str, kind: str | None) -> None:
    raw = body(platform=platform, type=kind) if kind else body(platform=platform)
    if kind is None or kind in PLATFORM_TYPES[platform]:
        assert validate_request(raw, CATALOG).type == (kind or DEFAULT_TYPE[platform])
    else:
        assert set(errors_of(raw)) == {"type"}


@given(st.dictionaries(st.text(max_size=12), st.one_of(st.none(), st.integers(), st.text(),
                                                       st.lists(st.text(max_size=5)))))
def test_arbitrary_objects_never_crash_the_validator(raw: dict[str, Any]) -> None:
    errors: list[Any] | None = None
    try:
        validate_request(raw, CATALOG)
    except RequestInvalid as exc:
        errors = exc.errors
    assert errors is None or len(errors) > 0  # rejected only with a reason; nothing else raised


def test_a_nul_is_refused_in_words_and_escaped_in_a_field_name() -> None:
    found = errors_of(body(scene_description="a\x00", caption="b\x00", **{"c\x00d": 1}))
    assert found["scene_description"] == found["caption"] == (
        "must not contain the NUL character (U+0000)")
    assert found["c\\u0000d"] == "unknown field"  # stored with a Kafka request's outcome


def test_a_planned_instant_is_kept_as_utc() -> None:
    valid = validate_request(body(planned_date="2026-12-24T18:30:00+01:00"), CATALOG)
    assert planned_at(valid.request.planned_date) == datetime(2026, 12, 24, 17, 30, tzinfo=UTC)
    assert planned_at("2026-12-24") == datetime(2026, 12, 24, tzinfo=UTC)
