"""Helpers the views share: JSON in and out, parsing into pydantic models, ids."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from services.api.handlers import NotFound
from services.api.validation import RequestInvalid, error_location, error_message
from shared.events import FieldError

M = TypeVar("M", bound=BaseModel)


def ok(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
       ) -> web.Response:
    return web.Response(status=status, text=model.model_dump_json(),
                        content_type="application/json", headers=headers)


def _problem_error(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"text": json.dumps({"type": "about:blank", "title": title, "status": status,
                                "detail": detail}),
            "content_type": "application/problem+json"}


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(**_problem_error(
            415, "Unsupported media type", "send Content-Type: application/json"))
    try:
        body = await request.read()
    except (HttpProcessingError, web.RequestPayloadError):  # not the gzip it claims to be
        raise web.HTTPBadRequest(**_problem_error(
            400, "Malformed body", "the body could not be read (is its Content-Encoding "
            "right?)")) from None
    try:
        # pydantic's parser, as for Kafka messages: it refuses what json.loads lets through
        # and the database cannot take (an unpaired surrogate, NaN) or Python cannot nest
        # (json.loads raised RecursionError, a 500, past a thousand levels).
        return from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise web.HTTPBadRequest(**_problem_error(400, "Malformed JSON", str(exc))) from None


def parse(model: type[M], data: Any) -> M:
    """Validate into `model`; RequestInvalid names every offending field."""
    if not isinstance(data, dict):
        raise RequestInvalid([FieldError(field="body", message="must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestInvalid([
            FieldError(field=error_location(e["loc"]), message=error_message(e))
            for e in exc.errors()
        ]) from None


async def body_of(request: web.Request, model: type[M]) -> M:
    return parse(model, await read_json(request))


def query_of(request: web.Request, model: type[M]) -> M:
    """The query string validated into `model`; a parameter given twice is an error (of
    `?status=ready&status=approved`, one would silently be dropped)."""
    repeated = [FieldError(field=name, message="given more than once")
                for name in dict.fromkeys(request.query) if len(request.query.getall(name)) > 1]
    try:
        parsed = parse(model, dict(request.query))
    except RequestInvalid as exc:
        raise RequestInvalid(repeated + exc.errors) from None
    if repeated:
        raise RequestInvalid(repeated)
    return parsed


def uuid_param(request: web.Request, name: str = "id") -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise NotFound() from None


IDEMPOTENCY_KEY_DOC = ("1 to 255 printable characters, kept 24 hours: the same key and body "
                       "returns the first response; another body 422; while the first is in "
                       "flight 409")


def idempotency_key(request: web.Request) -> str | None:
    """The request's `Idempotency-Key`, or None; 422 unless it is 1 to 255 printable
    characters (bytes that are not UTF-8 reach us as surrogates, which cannot be stored)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
        raise RequestInvalid([FieldError(field="Idempotency-Key",
                                         message="must be 1 to 255 printable characters")])
    return key


def cursor_after(created_at: datetime, row_id: UUID) -> str:
    """A keyset cursor for lists ordered by `(created_at, id)` descending: stable under
    inserts (a new row is newer than every page already read)."""
    raw = f"{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def parse_cursor(cursor: str) -> tuple[datetime, UUID]:
    """`cursor_after`'s position; 422 for anything else."""
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:  # ours carry the offset PostgreSQL gave
            raise ValueError(created)
        # As the driver sends it: an instant past the year 9999 in UTC was a 500.
        return at.astimezone(UTC), UUID(row_id)
    except (ValueError, OverflowError):  # (bad base64 and UTF-8 are ValueErrors too)
        raise RequestInvalid(
            [FieldError(field="cursor", message="not a cursor from this API")]
        ) from None
