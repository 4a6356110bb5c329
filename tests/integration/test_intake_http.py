"""The intake contract over HTTP, on the real database."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import pytest

from devstack.proc import free_port
from services.api import idempotency
from services.api.event_hub import MAX_STREAMS_PER_WORKSPACE
from services.api.routes import MAX_CHARACTERS
from services.api.webhook_routes import MAX_ENDPOINTS
from tests.infra import Infra
from tests.integration.conftest import ADMIN, Client, eventually, serving_api

pytestmark = pytest.mark.integration
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


async def counts(pool: asyncpg.Pool, workspace_id: str) -> tuple[int, ...]:
    ws = UUID(workspace_id)
    return (
        await pool.fetchval("SELECT count(*) FROM videos WHERE workspace_id = $1", ws),
        await pool.fetchval("SELECT count(*) FROM jobs WHERE workspace_id = $1", ws),
        await pool.fetchval("SELECT count(*) FROM credit_ledger WHERE workspace_id = $1"
                            " AND kind = 'reserve'", ws),
        await pool.fetchval("SELECT credits_reserved FROM workspaces WHERE id = $1", ws),
        await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'influgen.video.jobs.v1'"
                            " AND convert_from(payload, 'UTF8')::jsonb ->> 'workspace_id' = $1",
                            workspace_id),
    )


async def test_keys_and_tokens_are_required(client: Client) -> None:
    ws = await client.workspace()
    for token in (None, "wrong", ADMIN):
        status, _, headers = await client.call("GET", "/v1/credits", token)
        assert status == 401
        assert headers["Content-Type"].startswith("application/problem+json")
    status, _, _ = await client.call("POST", "/v1/admin/workspaces", ws["api_key"],
                                     {"name": "x"})
    assert status == 401
    status, _, _ = await client.call("GET", "/healthz", None)
    assert status == 200


async def test_files_are_served_and_every_other_answer_is_a_problem_document(
        infra: Infra, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Media files and the web page's assets are served; a missing file, a directory, a
    symlink or a name of another shape is a 404 problem document (aiohttp's static routes
    answered a missing file with a bodiless 404 and a directory with a plain-text 403)."""
    media = tmp_path / "media"
    video_id = uuid4()
    (media / str(video_id)[:2]).mkdir(parents=True)
    (media / str(video_id)[:2] / f"{video_id}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (tmp_path / "secret.mp4").write_bytes(b"not for the web")
    linked = uuid4()
    (media / str(linked)[:2]).mkdir(exist_ok=True)
    (media / str(linked)[:2] / f"{linked}.mp4").symlink_to(tmp_path / "secret.mp4")
    async with serving_api(infra, pool, "test-files", media_dir=media) as api:
        status, _, headers = await api.call("GET", f"/media/{str(video_id)[:2]}/{video_id}.mp4",
                                            None)
        assert status == 200
        assert headers["Content-Type"] == "video/mp4"
        assert len(headers["X-Request-ID"]) == 32  # files too (set as any answer starts)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in headers  # the HTML pages' only
        status, _, _ = await api.call("GET", "/static/app.js", None)
        assert status == 200
        missing = uuid4()
        for path in (f"/media/{str(missing)[:2]}/{missing}.mp4",
                     f"/media/{str(linked)[:2]}/{linked}.mp4",
                     f"/media/{str(video_id)[:2]}", "/media/", "/static/", "/static/nope.js",
                     "/media/../secret.mp4", "/media/%2e%2e/secret.mp4",
                     "/static/..%2fapp.js"):
            status, problem, headers = await api.call("GET", path, None)
            assert status == 404, path
            assert headers["Content-Type"].startswith("application/problem+json"), path
            assert (problem["status"], problem["title"]) == (404, "Not found"), path
            assert headers["X-Content-Type-Options"] == "nosniff"


async def test_a_creation_sent_again_makes_no_second_workspace(client: Client,
                                                                 pool: asyncpg.Pool) -> None:
    """The answer holds the only copy of the API key, so a retry cannot replay it: it names
    the workspace made, whose key the operator then replaces."""
    name = f"once-{uuid4()}"
    body = {"name": name, "credits": 10}
    results = await asyncio.gather(*(
        client.call("POST", "/v1/admin/workspaces", ADMIN, body,
                    headers={"Idempotency-Key": name}) for _ in range(5)))
    [created] = [r[1] for r in results if r[0] == 201]
    others = [r[1] for r in results if r[0] != 201]
    assert [(p["status"], p["workspace_id"]) for p in others] == [(409, created["id"])] * 4
    assert f"/v1/admin/workspaces/{created['id']}/key" in others[0]["detail"]
    status, problem, _ = await client.call("POST", "/v1/admin/workspaces", ADMIN,
                                           {**body, "credits": 11},
                                           headers={"Idempotency-Key": name})
    assert (status, problem["title"]) == (422, "Idempotency-Key reused")
    assert await pool.fetchval("SELECT count(*) FROM workspaces WHERE name = $1", name) == 1
    assert await pool.fetchval("SELECT credits_balance FROM workspaces WHERE name = $1",
                               name) == 10
    for _ in range(2):  # without a key, every creation counts
        status, _, _ = await client.call("POST", "/v1/admin/workspaces", ADMIN, body)
        assert status == 201
    assert await pool.fetchval("SELECT count(*) FROM workspaces WHERE name = $1", name) == 3


async def test_an_operator_lists_and_finds_workspaces(client: Client) -> None:
    """Newest first, with their credits, a page at a time (a cursor stable under inserts);
    `name` finds them by a part of the name, in any case."""
    tag = uuid4().hex[:8]
    made = []
    for i in range(5):
        status, ws, _ = await client.call("POST", "/v1/admin/workspaces", ADMIN,
                                          {"name": f"Studio {tag} {i}", "credits": i})
        assert status == 201
        made.append(ws["id"])
    seen: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(3):
        status, page, _ = await client.call(
            "GET", f"/v1/admin/workspaces?name=STUDIO%20{tag}&limit=2{cursor}", ADMIN)
        assert status == 200, page
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
        if len(seen) == 2:  # a workspace made now is newer than every page: not seen
            await client.call("POST", "/v1/admin/workspaces", ADMIN,
                              {"name": f"Studio {tag} late", "credits": 0})
    assert [w["id"] for w in seen] == made[::-1]
    assert [(w["balance"], w["available"]) for w in seen] == [(i, i) for i in range(4, -1, -1)]
    assert "api_key" not in seen[0]
    for query, field in (("limit=0", "limit"), ("cursor=nope", "cursor"), ("name=", "name"),
                         ("name=%00", "name"), ("sort=name", "sort")):
        status, problem, _ = await client.call("GET", f"/v1/admin/workspaces?{query}", ADMIN)
        assert (status, problem["errors"][0]["field"]) == (422, field), query
    status, _, _ = await client.call("GET", "/v1/admin/workspaces", made[0])
    assert status == 401


async def test_an_operator_reads_a_workspace_and_its_credits(client: Client) -> None:
    ws = await client.workspace(credits=100)
    cid = await client.character(ws["api_key"])
    await client.call("POST", f"/v1/admin/workspaces/{ws['id']}/credits", ADMIN,
                      {"amount": 50, "reason": "top-up"})
    status, _, _ = await client.call("POST", "/v1/videos", ws["api_key"], {
        "character_id": cid, "scene_description": SCENE, "duration_seconds": 10})
    assert status == 202
    status, info, _ = await client.call("GET", f"/v1/admin/workspaces/{ws['id']}", ADMIN)
    assert status == 200, info
    assert (info["id"], info["name"], info["sandbox"]) == (ws["id"], ws["name"], False)
    assert "api_key" not in info
    credits = info["credits"]
    assert (credits["balance"], credits["reserved"], credits["available"]) == (150, 10, 140)
    assert [(e["kind"], e["amount"]) for e in credits["ledger"]] == [
        ("reserve", 10), ("grant", 50), ("grant", 100)]
    for token, path, expected in ((ws["api_key"], ws["id"], 401), (ADMIN, str(uuid4()), 404),
                                  (ADMIN, "nope", 404)):
        status, _, _ = await client.call("GET", f"/v1/admin/workspaces/{path}", token)
        assert status == expected


async def test_a_replaced_key_stops_working_and_the_new_one_works(client: Client) -> None:
    """A leaked key is replaced by the operator: the workspace, its characters and credits
    stay; the old key is refused at once by the process that replaced it (it was cached)."""
    ws = await client.workspace(credits=70)
    cid = await client.character(ws["api_key"])
    status, _, _ = await client.call("GET", "/v1/credits", ws["api_key"])  # now cached
    assert status == 200
    status, replaced, _ = await client.call("POST", f"/v1/admin/workspaces/{ws['id']}/key",
                                            ADMIN)
    assert status == 200, replaced
    assert (replaced["id"], replaced["name"], replaced["credits_balance"],
            replaced["sandbox"]) == (ws["id"], ws["name"], 70, False)
    assert replaced["api_key"].startswith("ifg_")
    assert replaced["api_key"] != ws["api_key"]
    status, problem, _ = await client.call("GET", "/v1/credits", ws["api_key"])
    assert (status, problem["title"]) == (401, "Unauthorized")
    status, chars, _ = await client.call("GET", "/v1/characters", replaced["api_key"])
    assert (status, [c["id"] for c in chars["items"]]) == (200, [cid])
    for token in (None, ws["api_key"], replaced["api_key"]):
        status, _, _ = await client.call("POST", f"/v1/admin/workspaces/{ws['id']}/key", token)
        assert status == 401
    status, _, _ = await client.call("POST", f"/v1/admin/workspaces/{uuid4()}/key", ADMIN)
    assert status == 404


async def test_api_keys_are_stored_hashed(client: Client, pool: asyncpg.Pool) -> None:
    ws = await client.workspace()
    stored = await pool.fetchval("SELECT api_key_hash FROM workspaces WHERE id = $1",
                                 UUID(ws["id"]))
    assert ws["api_key"].encode() not in bytes(stored)
    assert len(bytes(stored)) == 32


async def test_defaults_are_applied_and_visible(client: Client) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    status, video, headers = await client.call(
        "POST", "/v1/videos", ws["api_key"], {"character_id": cid, "scene_description": SCENE})
    assert status == 202, video
    assert headers["Location"] == f"/v1/videos/{video['id']}"
    assert {k: video[k] for k in ("platform", "type", "duration_seconds", "aspect_ratio",
                                  "model_id", "quality_tier", "hashtags", "status")} == {
        "platform": "instagram", "type": "reel", "duration_seconds": 8, "aspect_ratio": "9:16",
        "model_id": "influgen-preview-1", "quality_tier": "standard", "hashtags": [],
        "status": "queued"}
    assert video["credits"] == {"quoted": 8, "reserved": 8, "charged": None}
    assert video["job"]["state"] == "queued"
    assert video["job"]["queue_position"] >= 1
    assert set(video["scene_feedback"]) == {"present", "missing", "hints"}
    status, credits, _ = await client.call("GET", "/v1/credits", ws["api_key"])
    assert (credits["balance"], credits["reserved"], credits["available"]) == (1000, 8, 992)


async def test_the_stored_video_reads_back_as_answered(client: Client) -> None:
    """The 202's resource is built from the values written, not read back: a GET (from the
    row, through its JSON) gives the same resource, instants and scene feedback included."""
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    status, video, _ = await client.call("POST", "/v1/videos", ws["api_key"], {
        "character_id": cid, "scene_description": "Café au lait, «slow» push-in \u2028 ✨",
        "caption": "Ünïcode \"quotes\" and \\ backslash", "hashtags": ["paris", "café"],
        "planned_date": "2026-12-24T18:30:00+01:00", "cta": "Follow for more"})
    assert status == 202, video
    status, read, _ = await client.call("GET", f"/v1/videos/{video['id']}", ws["api_key"])
    assert status == 200
    assert read == video
    assert read["scene_feedback"]["present"] == ["setting", "framing", "pacing"]


BAD: list[tuple[dict[str, Any], set[str]]] = [
    ({"scene_description": SCENE}, {"character_id"}),
    ({"character_id": "$CID"}, {"scene_description"}),
    ({"character_id": "$CID", "scene_description": " "}, {"scene_description"}),
    ({"character_id": "$CID", "scene_description": "x" * 2001}, {"scene_description"}),
    ({"character_id": "$CID", "scene_description": SCENE, "duration_seconds": 4},
     {"duration_seconds"}),
    ({"character_id": "$CID", "scene_description": SCENE, "duration_seconds": 61},
     {"duration_seconds"}),
    ({"character_id": "$CID", "scene_description": SCENE, "duration_seconds": 8.5},
     {"duration_seconds"}),
    ({"character_id": "$CID", "scene_description": SCENE, "duration_seconds": "8"},
     {"duration_seconds"}),
    ({"character_id": "$CID", "scene_description": SCENE, "aspect_ratio": "2:3"},
     {"aspect_ratio"}),
    ({"character_id": "$CID", "scene_description": SCENE, "platform": "tiktok",
      "type": "reel"}, {"type"}),
    ({"character_id": "$CID", "scene_description": SCENE, "platform": "youtube",
      "type": "story"}, {"type"}),
    ({"character_id": "$CID", "scene_description": SCENE, "model_id": "nope"}, {"model_id"}),
    ({"character_id": "$CID", "scene_description": SCENE, "quality_tier": "ultra"},
     {"quality_tier"}),
    ({"character_id": "$CID", "scene_description": SCENE, "model_id": "replicate-video-1",
      "quality_tier": "draft"}, {"quality_tier"}),
    ({"character_id": "$CID", "scene_description": SCENE, "caption": "c" * 2201}, {"caption"}),
    ({"character_id": "$CID", "scene_description": SCENE, "hashtags": ["a"] * 31},
     {"hashtags"}),
    ({"character_id": "$CID", "scene_description": SCENE, "hashtags": ["no spaces"]},
     {"hashtags"}),
    # Lengths that keep a video's events small: a megabyte of hashtags made a completion
    # event larger than a Kafka record may be.
    ({"character_id": "$CID", "scene_description": SCENE, "hashtags": ["ok", "a" * 101]},
     {"hashtags[1]"}),
    ({"character_id": "$CID", "scene_description": SCENE, "model_id": "m" * 101},
     {"model_id"}),
    ({"character_id": "$CID", "scene_description": SCENE,
      "planned_date": "2026-12-01" + "0" * 60}, {"planned_date"}),
    ({"character_id": "$CID", "scene_description": SCENE, "planned_date": "soon"},
     {"planned_date"}),
    ({"character_id": "$CID", "scene_description": SCENE,
      "planned_date": "9999-12-31T23:59:59-14:00"}, {"planned_date"}),
    # U+0000: PostgreSQL cannot store it (this was a 500).
    ({"character_id": "$CID", "scene_description": "a\x00b", "caption": "\x00",
      "cta": "\x00", "x\x00": 1}, {"scene_description", "caption", "cta", "x\\u0000"}),
    ({"character_id": "$CID", "scene_description": SCENE, "duraton_seconds": 8},
     {"duraton_seconds"}),
    ({"character_id": str(uuid4()), "scene_description": SCENE}, {"character_id"}),
    ({"character_id": "$CID", "scene_description": 7, "duration_seconds": 99,
      "platform": "tiktok", "type": "story", "extra": 1},
     {"scene_description", "duration_seconds", "type", "extra"}),
]


@pytest.mark.parametrize(("raw", "fields"), BAD)
async def test_bad_requests_name_every_field_and_create_nothing(
    client: Client, pool: asyncpg.Pool, raw: dict[str, Any], fields: set[str]
) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    body = {k: (cid if v == "$CID" else v) for k, v in raw.items()}
    before = await counts(pool, ws["id"])
    status, problem, headers = await client.call("POST", "/v1/videos", ws["api_key"], body)
    assert status == 422, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert {e["field"] for e in problem["errors"]} == fields
    assert await counts(pool, ws["id"]) == before


async def test_another_workspaces_character_and_video_are_invisible(client: Client) -> None:
    a, b = await client.workspace(), await client.workspace()
    cid_a = await client.character(a["api_key"])
    status, problem, _ = await client.call(
        "POST", "/v1/videos", b["api_key"], {"character_id": cid_a, "scene_description": SCENE})
    assert status == 422
    assert problem["errors"][0]["field"] == "character_id"
    _, video, _ = await client.call(
        "POST", "/v1/videos", a["api_key"], {"character_id": cid_a, "scene_description": SCENE})
    for path in (f"/v1/videos/{video['id']}", f"/v1/characters/{cid_a}", "/v1/videos/nope"):
        status, _, _ = await client.call("GET", path, b["api_key"])
        assert status == 404


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("data", "headers", "status", "title"),
    [(b"not json", JSON, 400, "Malformed JSON"), (b"[1, 2]", JSON, 422, "The request is invalid"),
     (b'{"a": 1}', {"Content-Type": "text/plain"}, 415, "Unsupported media type"),
     (b"x" * (1024 * 1024 + 10), JSON, 413, "Request body too large"),
     # Too deep for json.loads, and a string PostgreSQL cannot encode: each was a 500.
     (b"[" * 100_000, JSON, 400, "Malformed JSON"),
     (b'{"character_id": "$CID", "scene_description": "a\\ud800"}', JSON, 400,
      "Malformed JSON"),
     # A body that does not decode as its Content-Encoding says: was a 500.
     (b"not gzip", {**JSON, "Content-Encoding": "gzip"}, 400, "Malformed body"),
     # A gzip bomb: 50 MiB of JSON in 50 KiB.
     (gzip.compress(b'{"a": "' + b"0" * (50 << 20) + b'"}'), {**JSON, "Content-Encoding": "gzip"},
      413, "Request body too large")],
)
async def test_malformed_bodies(client: Client, pool: asyncpg.Pool, data: bytes,
                                headers: dict[str, str], status: int, title: str) -> None:
    ws = await client.workspace()
    if b"$CID" in data:
        data = data.replace(b"$CID", (await client.character(ws["api_key"])).encode())
    before = await counts(pool, ws["id"])
    got, problem, answer_headers = await client.call(
        "POST", "/v1/videos", ws["api_key"], data=data, headers=headers)
    assert got == status
    assert answer_headers["Content-Type"].startswith("application/problem+json")
    assert (problem["status"], problem["title"]) == (status, title)
    assert problem.get("detail")  # what was wrong, not only the status's name
    assert await counts(pool, ws["id"]) == before


async def test_short_balance_is_402_and_creates_nothing(client: Client,
                                                        pool: asyncpg.Pool) -> None:
    ws = await client.workspace(credits=10)
    cid = await client.character(ws["api_key"])
    before = await counts(pool, ws["id"])
    status, problem, _ = await client.call("POST", "/v1/videos", ws["api_key"], {
        "character_id": cid, "scene_description": SCENE, "duration_seconds": 12})
    assert status == 402
    assert (problem["quote"], problem["available"], problem["shortfall"]) == (12, 10, 2)
    assert await counts(pool, ws["id"]) == before


async def test_concurrent_requests_never_overdraw(client: Client, pool: asyncpg.Pool) -> None:
    ws = await client.workspace(credits=40)
    cid = await client.character(ws["api_key"])
    results = await asyncio.gather(*(client.call("POST", "/v1/videos", ws["api_key"], {
        "character_id": cid, "scene_description": SCENE}) for _ in range(10)))
    assert sorted(r[0] for r in results) == [202] * 5 + [402] * 5
    _, credits, _ = await client.call("GET", "/v1/credits", ws["api_key"])
    assert (credits["reserved"], credits["available"]) == (40, 0)


async def test_dry_run_quotes_and_stores_nothing(client: Client, pool: asyncpg.Pool) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    before = await counts(pool, ws["id"])
    status, result, _ = await client.call(
        "POST", "/v1/videos?dry_run=true", ws["api_key"],
        {"character_id": cid, "scene_description": "a woman", "quality_tier": "premium",
         "platform": "tiktok"})
    assert status == 200
    assert result["credits"]["quoted"] == 16
    assert result["request"]["type"] == "short"
    assert result["scene_feedback"]["missing"] == ["setting", "action", "mood", "framing",
                                                   "pacing"]
    assert await counts(pool, ws["id"]) == before


@pytest.mark.parametrize("query", ["dry_run=True", "dry_run=1", "dry_run=yes", "dry_run=TRUE"])
async def test_dry_run_in_the_spellings_clients_send(client: Client, pool: asyncpg.Pool,
                                                     query: str) -> None:
    """`params={"dry_run": True}` in Python's HTTP clients sends `True`: it used to create
    the video and reserve its credits."""
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    before = await counts(pool, ws["id"])
    status, result, _ = await client.call("POST", f"/v1/videos?{query}", ws["api_key"], {
        "character_id": cid, "scene_description": SCENE})
    assert (status, result["valid"]) == (200, True)
    assert await counts(pool, ws["id"]) == before


@pytest.mark.parametrize(("query", "errors"), [
    ("dry_run=maybe", [("dry_run", "Input should be a valid boolean, unable to interpret "
                                   "input")]),
    ("dryrun=true", [("dryrun", "unknown field")]),
    ("dry_run=true&dry_run=false", [("dry_run", "given more than once")]),
    ("dry_run=1&dry_run=1&x=1", [("dry_run", "given more than once"), ("x", "unknown field")]),
])
async def test_a_query_not_understood_creates_nothing(client: Client, pool: asyncpg.Pool,
                                                      query: str,
                                                      errors: list[tuple[str, str]]) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    before = await counts(pool, ws["id"])
    status, problem, _ = await client.call("POST", f"/v1/videos?{query}", ws["api_key"], {
        "character_id": cid, "scene_description": SCENE})
    assert status == 422
    assert [(e["field"], e["message"]) for e in problem["errors"]] == errors
    assert await counts(pool, ws["id"]) == before


async def test_a_list_filter_given_twice_is_refused(client: Client) -> None:
    ws = await client.workspace()
    status, problem, _ = await client.call(
        "GET", "/v1/videos?status=ready&status=approved&limit=500", ws["api_key"])
    assert status == 422
    assert [e["field"] for e in problem["errors"]] == ["status", "limit"]
    assert problem["errors"][0]["message"] == "given more than once"


@pytest.mark.parametrize("value", ["2026-13-01", "tomorrow", "2026-12-02T25:00:00Z", ""])
async def test_a_planned_bound_that_is_no_date_is_one_error(client: Client, value: str) -> None:
    """Not two, under `planned_from.datetime` and `planned_from.date` (the union's members)."""
    ws = await client.workspace()
    status, problem, _ = await client.call(
        "GET", f"/v1/videos?planned_from={value}&planned_to=2026-12-04", ws["api_key"])
    assert status == 422
    assert [(e["field"], e["message"]) for e in problem["errors"]] == [
        ("planned_from", "must be a date (YYYY-MM-DD) or an ISO 8601 date-time")]


async def test_idempotency_key_replays_refuses_and_blocks(client: Client,
                                                          pool: asyncpg.Pool) -> None:
    ws = await client.workspace()
    key = ws["api_key"]
    cid = await client.character(key)
    body = {"character_id": cid, "scene_description": SCENE}
    first = await client.call("POST", "/v1/videos", key, body, headers={"Idempotency-Key": "k1"})
    again = await client.call("POST", "/v1/videos", key, body, headers={"Idempotency-Key": "k1"})
    assert first[0] == again[0] == 202
    assert first[1] == again[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    other = await client.call("POST", "/v1/videos", key, {**body, "duration_seconds": 9},
                              headers={"Idempotency-Key": "k1"})
    assert other[0] == 422
    async with pool.acquire() as conn:  # a first request still in flight
        claim = await idempotency.claim(conn, workspace_id=UUID(ws["id"]), key="k2",
                                        digest=idempotency.request_hash(body))
    assert claim.owned
    busy = await client.call("POST", "/v1/videos", key, body, headers={"Idempotency-Key": "k2"})
    assert busy[0] == 409
    assert busy[2]["Retry-After"] == "1"
    assert (await counts(pool, ws["id"]))[0] == 1


async def test_concurrent_duplicates_create_one_item(client: Client, pool: asyncpg.Pool) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    body = {"character_id": cid, "scene_description": SCENE}
    results = await asyncio.gather(*(client.call(
        "POST", "/v1/videos", ws["api_key"], body, headers={"Idempotency-Key": "same"})
        for _ in range(8)))
    assert {r[0] for r in results} <= {202, 409}
    assert len({r[1]["id"] for r in results if r[0] == 202}) == 1
    assert (await counts(pool, ws["id"]))[0] == 1


async def test_a_grant_with_an_idempotency_key_happens_once(client: Client) -> None:
    """A grant retried after a lost answer must not grant twice: with the same key, amount
    and reason it grants nothing more (and says so); with another amount or reason, 422.
    Without a key every grant counts. The answer shows the ledger with the grant first."""
    ws = await client.workspace(credits=10)
    other = await client.workspace(credits=10)
    path = f"/v1/admin/workspaces/{ws['id']}/credits"
    body = {"amount": 100, "reason": "invoice 17"}
    status, first, headers = await client.call("POST", path, ADMIN, body,
                                               headers={"Idempotency-Key": "inv-17"})
    assert status == 200, first
    assert "Idempotent-Replayed" not in headers
    assert first["balance"] == 110
    assert [(e["kind"], e["amount"], e["reason"]) for e in first["ledger"]] == [
        ("grant", 100, "invoice 17"), ("grant", 10, "initial grant")]
    results = await asyncio.gather(*(
        client.call("POST", path, ADMIN, body, headers={"Idempotency-Key": "inv-17"})
        for _ in range(6)))
    assert {(r[0], r[1]["balance"], r[2].get("Idempotent-Replayed")) for r in results} == {
        (200, 110, "true")}
    for changed in ({"amount": 101, "reason": "invoice 17"}, {"amount": 100, "reason": "x"}):
        status, problem, _ = await client.call("POST", path, ADMIN, changed,
                                               headers={"Idempotency-Key": "inv-17"})
        assert (status, problem["title"]) == (422, "Idempotency-Key reused"), problem
    for bad in ("", "x" * 256, "tab\there"):
        status, problem, _ = await client.call("POST", path, ADMIN, body,
                                               headers={"Idempotency-Key": bad})
        assert status == 422, bad
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    # The key is the workspace's: the same key for another workspace is another grant.
    status, granted, _ = await client.call(
        "POST", f"/v1/admin/workspaces/{other['id']}/credits", ADMIN, body,
        headers={"Idempotency-Key": "inv-17"})
    assert (status, granted["balance"]) == (200, 110)
    status, _, _ = await client.call("POST", f"/v1/admin/workspaces/{uuid4()}/credits", ADMIN,
                                     body, headers={"Idempotency-Key": "inv-17"})
    assert status == 404
    for expected in (210, 310):
        status, granted, _ = await client.call("POST", path, ADMIN, body)
        assert (status, granted["balance"]) == (200, expected)
    status, credits, _ = await client.call("GET", "/v1/credits", ws["api_key"])
    assert credits["balance"] == 310
    assert [e["amount"] for e in credits["ledger"]] == [100, 100, 100, 10]


async def test_refused_request_frees_its_key(client: Client) -> None:
    ws = await client.workspace(credits=5)
    cid = await client.character(ws["api_key"])
    body = {"character_id": cid, "scene_description": SCENE}
    status, _, _ = await client.call("POST", "/v1/videos", ws["api_key"], body,
                                     headers={"Idempotency-Key": "retry-me"})
    assert status == 402
    await client.call("POST", f"/v1/admin/workspaces/{ws['id']}/credits", ADMIN,
                      {"amount": 100, "reason": "top-up"})
    status, _, _ = await client.call("POST", "/v1/videos", ws["api_key"], body,
                                     headers={"Idempotency-Key": "retry-me"})
    assert status == 202


async def test_list_filters_and_stable_cursor(client: Client) -> None:
    ws = await client.workspace(credits=10_000)
    key = ws["api_key"]
    manual, auto = await client.character(key), await client.character(key, "autopilot")
    made = []
    for i in range(7):
        _, v, _ = await client.call("POST", "/v1/videos", key, {
            "character_id": manual if i % 2 else auto, "scene_description": SCENE,
            "platform": "tiktok" if i < 3 else "instagram",
            "planned_date": f"2026-12-0{i + 1}"})
        made.append(v["id"])
    status, page1, _ = await client.call("GET", "/v1/videos?limit=3", key)
    assert status == 200
    assert [v["id"] for v in page1["items"]] == made[::-1][:3]
    # An insert between pages does not shift the next page.
    await client.call("POST", "/v1/videos", key, {"character_id": manual,
                                                  "scene_description": SCENE})
    _, page2, _ = await client.call("GET", f"/v1/videos?limit=3&cursor={page1['next_cursor']}",
                                    key)
    _, page3, _ = await client.call("GET", f"/v1/videos?limit=3&cursor={page2['next_cursor']}",
                                    key)
    assert [v["id"] for v in page2["items"] + page3["items"]] == made[::-1][3:]
    assert page3["next_cursor"] is None
    _, tiktok, _ = await client.call("GET", "/v1/videos?platform=tiktok", key)
    assert len(tiktok["items"]) == 3
    _, by_char, _ = await client.call("GET", f"/v1/videos?character_id={auto}", key)
    assert len(by_char["items"]) == 4
    _, planned, _ = await client.call(
        "GET", "/v1/videos?planned_from=2026-12-02&planned_to=2026-12-04", key)
    assert len(planned["items"]) == 3
    status, problem, _ = await client.call("GET", "/v1/videos?limit=0&status=bogus", key)
    assert status == 422
    assert {e["field"] for e in problem["errors"]} == {"limit", "status"}
    for junk in ("garbage", f"9999-12-31T23:59:59-14:00|{uuid4()}",  # (that was a 500)
                 f"2026-12-01T00:00:00|{uuid4()}", "%ff"):
        cursor = junk if "|" not in junk else base64.urlsafe_b64encode(junk.encode()).decode()
        status, problem, _ = await client.call("GET", f"/v1/videos?cursor={cursor}", key)
        assert (status, problem["errors"][0]["field"]) == (422, "cursor"), junk


async def test_rate_limit_answers_429_with_retry_after(infra: Infra, pool: asyncpg.Pool) -> None:
    async with serving_api(infra, pool, "test-api-rl", rate_limit_per_second=1,
                           rate_limit_burst=3) as c:
        ws = await c.workspace()
        statuses = [(await c.call("GET", "/v1/credits", ws["api_key"])) for _ in range(5)]
        assert [s[0] for s in statuses] == [200, 200, 200, 429, 429]
        assert int(statuses[3][2]["Retry-After"]) >= 1
        other = await c.workspace()  # the limit is per workspace
        assert (await c.call("GET", "/v1/credits", other["api_key"]))[0] == 200


async def test_characters_can_be_edited(client: Client) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    status, ch, _ = await client.call("PATCH", f"/v1/characters/{cid}", ws["api_key"],
                                      {"review_mode": "autopilot"})
    assert status == 200
    assert ch["review_mode"] == "autopilot"
    status, _, _ = await client.call("PATCH", f"/v1/characters/{cid}", ws["api_key"],
                                           {"review_mode": "sometimes"})
    assert status == 422
    _, listed, _ = await client.call("GET", "/v1/characters", ws["api_key"])
    assert [c["id"] for c in listed["items"]] == [cid]
    # A reference image is set and removed; a null name or review mode is refused, not
    # taken as "unchanged".
    image = "https://cdn.example.com/mila.png"
    for change, expected in [({"reference_image_url": image}, image),
                             ({"reference_image_url": None}, None)]:
        status, ch, _ = await client.call("PATCH", f"/v1/characters/{cid}", ws["api_key"],
                                          change)
        assert (status, ch["reference_image_url"]) == (200, expected)
    status, problem, _ = await client.call("PATCH", f"/v1/characters/{cid}", ws["api_key"],
                                           {"name": None, "review_mode": None})
    assert status == 422
    assert [(e["field"], e["message"]) for e in problem["errors"]] == [
        ("name", "must not be null (leave it out to keep it)"),
        ("review_mode", "must not be null (leave it out to keep it)")]


@pytest.mark.parametrize(("path", "data", "field", "message"), [
    ("/v1/characters", {"name": "  "}, "name", "must not be blank"),
    ("/v1/characters", {"name": "Ann", "reference_image_url": "javascript:alert(1)"},
     "reference_image_url", "must be an http or https URL with a host"),
    ("/v1/characters", {"name": "Ann", "reference_image_url": "https://cdn.example.com:99999/a"},
     "reference_image_url", "the port must be a number from 1 to 65535"),
    ("/v1/characters", {"name": "Ann", "reference_image_url": "http://[::1/a.png"},
     "reference_image_url", "is not a URL (Invalid IPv6 URL)"),
    ("/v1/webhooks", {"url": "http://[::1/hook"}, "url", "is not a URL (Invalid IPv6 URL)"),
    ("/v1/admin/workspaces", {"name": "\t "}, "name", "must not be blank"),
    ("/v1/admin/workspaces/{ws}/credits", {"amount": 5, "reason": " "}, "reason",
     "must not be blank"),
])
async def test_blank_names_and_urls_nobody_can_fetch_are_refused(
    client: Client, path: str, data: dict[str, Any], field: str, message: str
) -> None:
    """A name of spaces was stored as given; a reference image `javascript:` URL too; an
    unclosed IPv6 bracket in a webhook URL was a 500."""
    ws = await client.workspace()
    auth = ADMIN if path.startswith("/v1/admin") else ws["api_key"]
    status, problem, _ = await client.call("POST", path.format(ws=ws["id"]), auth, data)
    assert status == 422, problem
    assert problem["errors"] == [{"field": field, "message": message}]


async def test_a_nul_character_in_any_body_is_a_422_naming_the_field(client: Client) -> None:
    """PostgreSQL's text cannot hold U+0000: each of these was a 500."""
    ws = await client.workspace()
    key = ws["api_key"]
    cid = await client.character(key)
    calls = [("POST", "/v1/admin/workspaces", ADMIN, {"name": "a\x00"}, "name"),
             ("POST", "/v1/characters", key, {"name": "a\x00"}, "name"),
             ("POST", "/v1/characters", key, {"name": "a", "reference_image_url": "\x00"},
              "reference_image_url"),
             ("PATCH", f"/v1/characters/{cid}", key, {"name": "\x00"}, "name"),
             ("POST", f"/v1/admin/workspaces/{ws['id']}/credits", ADMIN,
              {"amount": 5, "reason": "\x00"}, "reason"),
             ("POST", "/v1/webhooks", key, {"url": "https://example.com/\x00"}, "url"),
             ("POST", f"/v1/videos/{uuid4()}/review", key,
              {"decision": "approve", "note": "\x00"}, "note"),
             ("GET", "/v1/videos?planned_to=9999-12-31T23:59:59-14:00", key, None,
              "planned_to")]
    for method, path, auth, data, field in calls:
        status, problem, _ = await client.call(method, path, auth, data)
        assert status == 422, (path, problem)
        assert [e["field"] for e in problem["errors"]] == [field], path
    _, listed, _ = await client.call("GET", "/v1/characters", key)
    assert [c["name"] for c in listed["items"]] == ["Mila"]


async def raw_post(client: Client, path: str, head: bytes, body: bytes = b"{}"
                   ) -> tuple[int, Any]:
    """A request with header bytes that an HTTP client library would not send."""
    url = urlparse(client.base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: api\r\n" + head +
                 b"Content-Type: application/json\r\nContent-Length: " +
                 str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


async def test_header_bytes_that_are_not_utf8_are_refused_not_a_500(client: Client,
                                                                    pool: asyncpg.Pool) -> None:
    """aiohttp hands such bytes on as surrogates, which could not be hashed or stored."""
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    body = json.dumps({"character_id": cid, "scene_description": SCENE}).encode()
    auth = b"Authorization: Bearer " + ws["api_key"].encode() + b"\r\n"
    before = await counts(pool, ws["id"])
    status, problem = await raw_post(client, "/v1/videos", auth + b"Idempotency-Key: k\xff\r\n",
                                     body)
    assert (status, problem["errors"][0]["field"]) == (422, "Idempotency-Key")
    assert (await raw_post(client, "/v1/videos", b"Authorization: Bearer \xff\xfe\r\n",
                           body))[0] == 401
    assert (await raw_post(client, "/v1/admin/workspaces",
                           b"Authorization: Bearer \xff\r\n"))[0] == 401
    assert await counts(pool, ws["id"]) == before
    # A key of any printable text still works.
    status, _ = await raw_post(client, "/v1/videos",
                               auth + "Idempotency-Key: café\r\n".encode(), body)
    assert status == 202


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook",
                                 "http://10.1.2.3/hook", "http://[::1]/hook",
                                 "http://169.254.169.254/latest",
                                 "http://[64:ff9b::7f00:1]/hook", "http://[2002:a00:1::]/hook"])
async def test_webhooks_to_private_addresses_are_refused(client: Client, url: str) -> None:
    ws = await client.workspace()
    status, problem, _ = await client.call("POST", "/v1/webhooks", ws["api_key"], {"url": url})
    assert status == 422
    assert problem["errors"][0]["field"] == "url"
    assert "non-public" in problem["errors"][0]["message"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/hook", "http://127.0.0.1:0/hook",
                                 "http://127.0.0.1:x/hook"])
async def test_webhooks_with_no_usable_port_are_refused(client: Client, url: str) -> None:
    """Checked before the address (and so also where private addresses are allowed): a port
    past 65535 was a 500."""
    ws = await client.workspace()
    status, problem, _ = await client.call("POST", "/v1/webhooks", ws["api_key"], {"url": url})
    assert status == 422
    assert problem["errors"] == [{"field": "url",
                                  "message": "the port must be a number from 1 to 65535"}]


async def test_a_workspace_has_at_most_sixteen_webhook_endpoints(client: Client) -> None:
    """Each endpoint gets a delivery of every completion event; registrations at once
    cannot pass the limit together. (A public address by IP: no DNS is needed, and the
    workspace completes no video, so nothing is ever sent to it.)"""
    ws = await client.workspace()
    key = ws["api_key"]

    async def register() -> tuple[int, Any]:
        status, body, _ = await client.call("POST", "/v1/webhooks", key,
                                            {"url": "https://93.184.216.34/hook"})
        return status, body

    first = [await register() for _ in range(MAX_ENDPOINTS - 2)]
    assert {status for status, _ in first} == {201}
    racing = await asyncio.gather(*(register() for _ in range(6)))
    assert sorted(status for status, _ in racing) == [201, 201, 409, 409, 409, 409]
    refused = next(body for status, body in racing if status == 409)
    assert refused["detail"] == ("a workspace may have at most 16 webhook endpoints; "
                                 "delete one first")
    _, listed, _ = await client.call("GET", "/v1/webhooks", key)
    assert len(listed["items"]) == MAX_ENDPOINTS
    status, _, _ = await client.call("DELETE", f"/v1/webhooks/{first[0][1]['id']}", key)
    assert status == 204
    assert (await register())[0] == 201


async def test_a_workspace_has_at_most_a_thousand_characters(client: Client,
                                                             pool: asyncpg.Pool) -> None:
    """`GET /v1/characters` answers with all of them. (998 are written directly, then the
    last two places are raced for over HTTP.)"""
    ws = await client.workspace()
    key = ws["api_key"]
    await pool.executemany(
        "INSERT INTO characters (id, workspace_id, name, review_mode) VALUES ($1, $2, $3,"
        " 'manual')", [(uuid4(), UUID(ws["id"]), f"c{n}") for n in range(MAX_CHARACTERS - 2)])
    racing = await asyncio.gather(*(client.call("POST", "/v1/characters", key, {"name": "x"})
                                    for _ in range(5)))
    assert sorted(status for status, _, _ in racing) == [201, 201, 409, 409, 409]
    refused = next(body for status, body, _ in racing if status == 409)
    assert refused["detail"] == "a workspace may have at most 1,000 characters"
    _, listed, _ = await client.call("GET", "/v1/characters", key)
    assert len(listed["items"]) == MAX_CHARACTERS
    other = await client.workspace()  # per workspace
    assert (await client.call("POST", "/v1/characters", other["api_key"],
                              {"name": "x"}))[0] == 201


async def test_metrics_count_requests_by_route(client: Client) -> None:
    ws = await client.workspace()
    await client.call("GET", "/v1/credits", ws["api_key"])
    await client.call("GET", "/v1/credits", "wrong")
    async with client.session.get(client.base + "/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200
    assert 'influgen_api_requests_total{method="GET",route="/v1/credits",status="200"} 1.0' in text
    assert 'route="/v1/credits",status="401"} 1.0' in text


async def test_a_lost_database_answers_503_problem_with_retry_after(infra: Infra) -> None:
    # A pool whose server is gone (nothing listens on the port): every call that needs the
    # database must answer a problem document saying "retry", not aiohttp's text/plain 500.
    gone = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                                     min_size=0)
    try:
        async with serving_api(infra, gone, "test-api-gone", rate_limit_per_second=0) as c:
            for method, path, token in [("POST", "/v1/videos", "some-key"),
                                        ("GET", "/v1/credits", "some-key"),
                                        ("POST", "/v1/admin/workspaces", ADMIN)]:
                body = {"name": "t", "credits": 1} if "admin" in path else {
                    "character_id": str(uuid4()), "scene_description": SCENE}
                status, problem, headers = await c.call(method, path, token, body)
                assert status == 503, (path, status, problem)
                assert headers["Content-Type"].startswith("application/problem+json")
                assert problem["title"] == "Service unavailable"
                assert headers["Retry-After"] == "1"
    finally:
        await gone.close()


async def test_a_workspace_may_hold_a_hundred_event_streams_open(client: Client) -> None:
    """Each open stream reads the database every few seconds while it waits: past the
    limit a stream is refused (429), until one closes."""
    ws = await client.workspace()
    key = ws["api_key"]
    cid = await client.character(key)
    _, video, _ = await client.call("POST", "/v1/videos", key,
                                    {"character_id": cid, "scene_description": SCENE})
    url = f"{client.base}/v1/videos/{video['id']}/events"  # queued: no generator runs here
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        streams = [await session.get(url, headers=headers)
                   for _ in range(MAX_STREAMS_PER_WORKSPACE)]
        try:
            assert {s.status for s in streams} == {200}
            async with session.get(url, headers=headers) as refused:
                assert refused.status == 429
                assert refused.headers["Retry-After"] == "1"
            other = await client.workspace()  # per workspace
            other_video = (await client.call(
                "POST", "/v1/videos", other["api_key"],
                {"character_id": await client.character(other["api_key"]),
                 "scene_description": SCENE}))[1]
            async with session.get(f"{client.base}/v1/videos/{other_video['id']}/events",
                                   headers={"Authorization": f"Bearer {other['api_key']}"}
                                   ) as theirs:
                assert theirs.status == 200
            streams.pop().close()  # the server notices at its next wake-up (<= 5 s)

            async def a_place_is_free() -> bool:
                async with session.get(url, headers=headers) as again:
                    return again.status == 200

            assert await eventually(a_place_is_free, timeout=20)
        finally:
            for stream in streams:
                stream.close()
