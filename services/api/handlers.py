"""Use cases of the intake service, one function each. HTTP views and the Kafka consumer
call these; neither holds SQL or business rules."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import asyncpg

from services.api import idempotency
from services.api import repository as repo
from services.api.auth import KeyCache, hash_key, new_api_key
from services.api.scene import scene_feedback
from services.api.validation import RequestInvalid, ValidRequest, planned_at, validate_request
from shared import outbox
from shared.catalog import Catalog, ModelEntry
from shared.db import UNAVAILABLE, Conn
from shared.events import (
    FINAL_STATUSES,
    TOPIC_COMPLETED,
    TOPIC_REJECTED,
    FieldError,
    JobSpec,
    VideoCompleted,
    VideoJobQueued,
    VideoRequested,
    VideoRequestRejected,
    VideoResource,
    utcnow,
)
from shared.group_commit import GroupCommit
from shared.inbox import first_delivery
from shared.videos import completion_event_id, fetch_video, to_resource


class NotFound(Exception):
    pass


class CharacterNotFound(Exception):
    def __init__(self) -> None:
        super().__init__("no such character in this workspace")
        self.errors = [
            FieldError(field="character_id", message="no such character in this workspace")
        ]


class InsufficientCredits(Exception):
    def __init__(self, quote: int, available: int) -> None:
        super().__init__(f"this request costs {quote} credits; {available} are available")
        self.quote = quote
        self.available = available


@dataclass(frozen=True)
class Workspace:
    id: UUID
    name: str
    sandbox: bool


@dataclass(frozen=True)
class IntakeDeps:
    pool: asyncpg.Pool
    catalog: Catalog
    job_deadline: timedelta
    #: sends the job events of writes that commit on their own at once (`shared.outbox`)
    publisher: outbox.Publisher | None = None


class CreatedBefore(Exception):
    """A workspace was created with this Idempotency-Key before (`same`: with the same
    request); its API key cannot be shown again."""

    def __init__(self, workspace_id: UUID, same: bool) -> None:
        super().__init__(str(workspace_id))
        self.workspace_id = workspace_id
        self.same = same


async def create_workspace(
    pool: asyncpg.Pool, *, name: str, credits: int, sandbox: bool,
    creation_key: str | None = None,
) -> dict[str, Any]:
    key = new_api_key()
    digest = idempotency.request_hash([name, credits, sandbox])
    async with pool.acquire() as conn, conn.transaction():
        row = await repo.insert_workspace(
            conn, id=uuid4(), name=name, key_hash=hash_key(key), sandbox=sandbox,
            creation_key=creation_key, creation_hash=digest if creation_key else None,
        )
        if row is None:
            assert creation_key is not None
            first = await repo.workspace_by_creation_key(conn, creation_key)
            raise CreatedBefore(first["id"], bytes(first["creation_hash"]) == digest)
        if credits:
            await repo.grant(conn, workspace_id=row["id"], amount=credits, reason="initial grant")
    return _with_key(row, key, credits)


async def replace_key(pool: asyncpg.Pool, cache: KeyCache,
                      workspace_id: UUID) -> dict[str, Any] | None:
    """A new API key for the workspace, None when there is none. The old key stops working
    at once here and within the key cache's time to live in other api processes."""
    key = new_api_key()
    async with pool.acquire() as conn:
        row = await repo.replace_key_hash(conn, workspace_id=workspace_id,
                                          key_hash=hash_key(key))
    if row is None:
        return None
    cache.forget(workspace_id)
    return _with_key(row, key, row["credits_balance"])


def _with_key(row: Any, key: str, balance: int) -> dict[str, Any]:
    return {"id": str(row["id"]), "name": row["name"], "api_key": key,
            "credits_balance": balance, "sandbox": row["sandbox"]}


async def authenticate(pool: asyncpg.Pool, api_key: str, cache: KeyCache) -> Workspace | None:
    key_hash = hash_key(api_key)
    now = time.monotonic()
    found: Workspace | None = cache.get(key_hash, now)
    if found is not None:
        return found
    async with pool.acquire() as conn:
        row = await repo.workspace_by_key(conn, key_hash=key_hash)
    if row is None:
        return None
    found = _workspace(row)
    cache.put(key_hash, found, now)
    return found


async def workspace_by_id(conn: Conn, workspace_id: UUID) -> Workspace | None:
    row = await conn.fetchrow("SELECT * FROM workspaces WHERE id = $1", workspace_id)
    return _workspace(row) if row else None


def _workspace(row: Any) -> Workspace:
    return Workspace(id=row["id"], name=row["name"], sandbox=row["sandbox"])


def judge(body: object, catalog: Catalog) -> ValidRequest:
    """Validate a request body (raises RequestInvalid with every error)."""
    return validate_request(body, catalog)


def dry_run(valid: ValidRequest) -> dict[str, Any]:
    req = valid.request
    return {
        "valid": True,
        "request": {
            **req.model_dump(mode="json"),
            "type": valid.type,
            "model_id": valid.model.id,
        },
        "credits": {"quoted": valid.quote},
        "scene_feedback": scene_feedback(req.scene_description).model_dump(),
    }


@dataclass(frozen=True)
class NewVideo:
    """One accepted request on its way to the database. `claimed_key`: an HTTP
    Idempotency-Key this request claimed, whose response is stored with the effect."""

    workspace: Workspace
    valid: ValidRequest
    source: str
    claimed_key: str | None = None


#: What `create_videos` says of each request: its video, or why nothing was created.
Outcome = VideoResource | CharacterNotFound | InsufficientCredits


class CreditsMoved(Exception):
    """A workspace's available credits fell between reading them and reserving."""


async def create_videos(deps: IntakeDeps, conn: Conn, items: Sequence[NewVideo]
                        ) -> list[Outcome]:
    """Create the content items, their jobs, the credit reservations and the job events of
    several requests in the caller's transaction (`conn` must be inside one), in a fixed
    number of round trips however many there are. A request that is refused creates nothing;
    the others go ahead. Requests are served in the given order, also for credits.

    The credits are read without a lock and reserved last, on the condition that they are
    still there, so that the workspace rows are locked only from that statement to the
    commit (the finalizer updates the same rows, and a workspace's requests would otherwise
    queue behind each other's whole transactions). When the condition fails, the attempt
    (a savepoint) is undone and the requests are decided again with the rows locked first."""
    try:
        async with conn.transaction():
            return await _create_videos(deps, conn, items, lock_first=False)
    except CreditsMoved:
        return await _create_videos(deps, conn, items, lock_first=True)


async def _create_videos(deps: IntakeDeps, conn: Conn, items: Sequence[NewVideo], *,
                         lock_first: bool) -> list[Outcome]:
    """Two statements, whatever the number of items (the write is atomic on its own); one
    more with `lock_first`, which needs a transaction."""
    outcomes: list[Outcome | None] = [None] * len(items)
    workspace_ids = list({item.workspace.id for item in items})
    if lock_first:
        await repo.available_credits(conn, workspace_ids=workspace_ids, lock=True)
    renderers = [_renderer(deps.catalog, item) for item in items]
    state = await repo.intake_state(
        conn, character_ids=list({item.valid.request.character_id for item in items}),
        workspace_ids=workspace_ids, providers=list({r.provider for r in renderers}))
    available, queued = state.available, state.queued
    accepted: list[tuple[int, NewVideo, asyncpg.Record, ModelEntry]] = []
    for i, (item, renderer) in enumerate(zip(items, renderers, strict=True)):
        character = state.characters.get(item.valid.request.character_id)
        if character is None or character["workspace_id"] != item.workspace.id:
            outcomes[i] = CharacterNotFound()
            continue
        left = available[item.workspace.id]
        if item.valid.quote > left:
            outcomes[i] = InsufficientCredits(item.valid.quote, left)
            continue
        available[item.workspace.id] = left - item.valid.quote
        accepted.append((i, item, character, renderer))
    if not accepted:
        return _all_decided(outcomes)
    now = utcnow()
    videos: list[dict[str, Any]] = []
    jobs: list[tuple[UUID, UUID, UUID, str, datetime, datetime]] = []
    events: list[tuple[str, VideoJobQueued]] = []
    claims: list[tuple[UUID, str, int, str, UUID | None]] = []
    for n, (i, item, character, renderer) in enumerate(accepted):
        req, valid, workspace = item.valid.request, item.valid, item.workspace
        video_id, job_id = uuid4(), uuid4()
        # Distinct instants in arrival order: the queue is served oldest first.
        created = now + timedelta(microseconds=n)
        deadline = created + deps.job_deadline
        tier = (req.quality_tier if req.quality_tier in renderer.tiers
                else next(iter(renderer.tiers)))
        width, height = renderer.frame_size(tier, req.aspect_ratio)
        # The model itself: `to_json` writes it for the row and `to_resource` takes it as is.
        feedback = scene_feedback(req.scene_description)
        video = {
            "id": video_id, "workspace_id": workspace.id, "character_id": req.character_id,
            "status": "queued", "platform": req.platform, "type": valid.type,
            "scene_description": req.scene_description, "planned_date": req.planned_date,
            "planned_at": planned_at(req.planned_date), "caption": req.caption,
            "hashtags": req.hashtags, "cta": req.cta, "duration_seconds": req.duration_seconds,
            "aspect_ratio": req.aspect_ratio, "model_id": valid.model.id,
            "quality_tier": req.quality_tier,
            "scene_feedback": feedback,
            "credits_quoted": valid.quote, "request_source": item.source,
            "created_at": created, "updated_at": created,
        }
        videos.append(video)
        jobs.append((job_id, video_id, workspace.id, renderer.provider, deadline, created))
        queued[renderer.provider] = position = queued.get(renderer.provider, 0) + 1
        resource = to_resource({
            **video, "review_state": None, "media": None, "credits_charged": None,
            "completed_at": None, "settled": False, "job_id": job_id, "job_state": "queued",
            "job_attempts": 0, "job_progress": 0, "job_provider": renderer.provider,
            "job_error": None, "queue_position": position,
        })
        spec = JobSpec(
            job_id=job_id, video_id=video_id, provider=renderer.provider,
            model_id=valid.model.id, provider_model=renderer.provider_model,
            quality_tier=req.quality_tier, width=width, height=height, fps=renderer.fps,
            duration_seconds=req.duration_seconds, aspect_ratio=req.aspect_ratio,
            platform=req.platform, type=valid.type, scene_description=req.scene_description,
            character_id=req.character_id, character_name=character["name"],
            reference_image_url=character["reference_image_url"], deadline_at=deadline,
        )
        events.append((str(video_id), VideoJobQueued(
            workspace_id=workspace.id, correlation_id=str(video_id), job=spec)))
        if item.claimed_key is not None:
            claims.append((workspace.id, item.claimed_key, 202, resource.model_dump_json(),
                           video_id))
        outcomes[i] = resource
    # Last: the workspace rows it locks stay locked until the commit (in a transaction).
    if not await repo.create(conn, videos=videos, jobs=jobs, events=events, claims=claims,
                             check=not lock_first, publisher=deps.publisher):
        raise CreditsMoved()
    return _all_decided(outcomes)


def video_writer(deps: IntakeDeps, *, max_batch: int, max_concurrent: int
                 ) -> GroupCommit[NewVideo, VideoResource]:
    """Group commit of new videos: HTTP requests that arrive together are written together,
    each with its own outcome, by two statements and no transaction: the read, then the
    write, atomic on its own (`repo.create`), which holds the workspace rows only while it
    runs (in a transaction they would stay locked for the COMMIT's round trip as well, and
    the finalizer's settlements wait for them). When the credits moved in between, nothing
    was written: the batch is decided again in a transaction, with the rows locked first."""
    async def write(items: list[NewVideo]) -> list[Outcome]:
        async with deps.pool.acquire() as conn:
            try:
                return await _create_videos(deps, conn, items, lock_first=False)
            except CreditsMoved:
                pass
            async with conn.transaction():
                return await _create_videos(deps, conn, items, lock_first=True)

    return GroupCommit(write, max_batch=max_batch, max_concurrent=max_concurrent,
                       retry_alone=lambda exc: not isinstance(exc, UNAVAILABLE))


def _renderer(catalog: Catalog, item: NewVideo) -> ModelEntry:
    """What renders the video: the request's model, or the sandbox in a sandbox workspace."""
    if not item.workspace.sandbox:
        return item.valid.model
    sandbox = catalog.by_provider("sandbox")
    assert sandbox is not None, "the catalog has no sandbox model"
    return sandbox


def _all_decided(outcomes: list[Outcome | None]) -> list[Outcome]:
    assert all(o is not None for o in outcomes)
    return cast(list[Outcome], outcomes)


async def create_video(deps: IntakeDeps, workspace: Workspace, valid: ValidRequest, *,
                       source: str, conn: Conn) -> VideoResource:
    """One request's video (`create_videos` for one); raises why nothing was created."""
    [outcome] = await create_videos(deps, conn, [NewVideo(workspace, valid, source)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


#: Envelope fields of a request event; everything else is judged as the request body.
ENVELOPE_FIELDS = frozenset(
    {"event_id", "event_type", "schema_version", "occurred_at", "workspace_id",
     "correlation_id", "request_id"}
)
INTAKE_CONSUMER = "api"


async def intake_event(
    deps: IntakeDeps, conn: Conn, event: VideoRequested, raw: dict[str, Any]
) -> VideoResource | VideoRequestRejected | None:
    """A `video.requested` event, inside the caller's transaction: the same judging and
    creation as HTTP. Returns the created video, the rejection sent, or None for a duplicate."""
    if not await first_delivery(conn, consumer=INTAKE_CONSUMER, event_id=event.event_id):
        return None
    body = {k: v for k, v in raw.items() if k not in ENVELOPE_FIELDS}
    key = f"event:{event.request_id}"
    digest = idempotency.request_hash(body)

    async def reject(
        errors: list[FieldError], status: int, record_in: Workspace | None
    ) -> VideoRequestRejected:
        """Send the rejection; with `record_in`, remember the outcome under the request_id."""
        rejected = VideoRequestRejected(
            workspace_id=event.workspace_id,
            correlation_id=event.correlation_id or event.request_id,
            request_id=event.request_id, errors=errors,
        )
        await outbox.enqueue(conn, topic=TOPIC_REJECTED, key=event.request_id, event=rejected)
        if record_in is not None:
            await idempotency.record(
                conn, workspace_id=record_in.id, key=key, status=status, digest=digest,
                body={"errors": [e.model_dump() for e in errors]},
            )
        return rejected

    workspace = await workspace_by_id(conn, event.workspace_id)
    if workspace is None:
        return await reject(
            [FieldError(field="workspace_id", message="no such workspace")], 404, None)
    seen = await idempotency.lookup(conn, workspace_id=workspace.id, key=key)
    if seen is not None:
        if bytes(seen["request_hash"]) == digest:
            return None  # the same request again: its first outcome stands
        return await reject([FieldError(
            field="request_id", message="this request_id was used for a different request")],
            422, None)  # the first request's record stands
    try:
        valid = judge(body, deps.catalog)
        # A refusal creates nothing (it is decided before the first insert).
        resource = await create_video(deps, workspace, valid, source="kafka", conn=conn)
    except (RequestInvalid, CharacterNotFound) as exc:
        return await reject(exc.errors, 422, workspace)
    except InsufficientCredits as exc:
        return await reject([FieldError(field="credits", message=str(exc))], 402, workspace)
    await idempotency.record(
        conn, workspace_id=workspace.id, key=key, status=202, digest=digest,
        body=resource.model_dump(mode="json"), video_id=resource.id,
    )
    return resource


async def intake_events(deps: IntakeDeps, conn: Conn,
                        events: Sequence[tuple[VideoRequested, dict[str, Any]]]) -> None:
    """A batch of `video.requested` events, in order, inside the caller's transaction
    (`intake_event` each). Each event's write locks its workspace's row until the commit,
    so a batch would take them in the order of its events, and deadlock with a write that
    takes two of them in id order, as intake's and the finalizer's batches do: the batch
    locks all its workspaces' rows first, in id order (one statement)."""
    await repo.available_credits(
        conn, workspace_ids=sorted({event.workspace_id for event, _ in events}), lock=True)
    for event, raw in events:
        await intake_event(deps, conn, event, raw)


class Conflict(Exception):
    """The video is not in a state that allows the operation."""


async def request_cancel(conn: Conn, workspace: Workspace, video_id: UUID) -> None:
    """Ask the generator to stop the video's job; it ends `canceled` and the finalizer
    releases the credits. A video that already finished answers Conflict."""
    row = await conn.fetchrow(
        "SELECT v.status, j.state FROM videos v JOIN jobs j ON j.video_id = v.id"
        " WHERE v.id = $1 AND v.workspace_id = $2", video_id, workspace.id)
    if row is None:
        raise NotFound()
    if row["status"] in FINAL_STATUSES or row["state"] in ("succeeded", "failed", "canceled"):
        raise Conflict(f"the video is already {row['status']}")
    await conn.execute(
        "UPDATE jobs SET cancel_requested = true, updated_at = now()"
        " WHERE video_id = $1 AND state IN ('queued', 'submitted', 'running')", video_id)


async def review(conn: Conn, workspace: Workspace, video_id: UUID, *, decision: str,
                 note: str | None) -> VideoResource:
    """Approve or reject a `ready` video, with its completion event, in one transaction."""
    state = "approved" if decision == "approve" else "rejected"
    row = await conn.fetchrow(
        "UPDATE videos SET status = $3, review_state = $3, review_note = $4, reviewed_at = now(),"
        " updated_at = now() WHERE id = $1 AND workspace_id = $2 AND status = 'ready'"
        " RETURNING id",
        video_id, workspace.id, state, note)
    if row is None:
        current = await conn.fetchval(
            "SELECT status FROM videos WHERE id = $1 AND workspace_id = $2", video_id, workspace.id)
        if current is None:
            raise NotFound()
        raise Conflict(f"only a ready video can be reviewed; this one is {current}")
    resource = await fetch_video(conn, video_id)
    assert resource is not None
    event = VideoCompleted(
        event_id=completion_event_id(resource.job.id, f"video.{state}"),
        event_type=f"video.{state}",
        workspace_id=workspace.id, correlation_id=str(video_id), video=resource)
    await outbox.enqueue(conn, topic=TOPIC_COMPLETED, key=str(video_id), event=event)
    return resource
