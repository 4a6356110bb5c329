"""The Kafka request path: `influgen.video.requested.v1` through the api's real consumer."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from services.api import consumer
from services.api.main import intake_deps
from shared.consumer import stop_broker
from shared.events import TOPIC_DLQ, TOPIC_REJECTED, TOPIC_REQUESTED
from shared.kafka import MAX_DEAD_ORIGINAL, make_broker
from shared.outbox import OutboxRelay
from tests.infra import Infra
from tests.integration.conftest import Client, api_settings, eventually
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration
SCENE = "Dancing on a rooftop at night, handheld close-up, playful energy, quick cuts"


@pytest.fixture
async def intake(infra: Infra, pool: asyncpg.Pool, unique: str) -> AsyncIterator[None]:
    """The api's consumer and an outbox relay, running in this process."""
    broker = make_broker(infra.bootstrap_servers, "test-intake")
    consumer.register(broker, deps=intake_deps(api_settings(infra), pool),
                      group_id=f"test-intake-{unique}", fetch_max_wait_ms=10)
    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=0.2)
    await broker.start()
    task = asyncio.create_task(relay.run())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await stop_broker(broker)


async def publish(infra: Infra, *values: bytes, key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TOPIC_REQUESTED, value, key=key)
    finally:
        await producer.stop()


def event(workspace_id: str, request_id: str, **fields: Any) -> bytes:
    return json.dumps({"event_id": str(uuid4()), "event_type": "video.requested",
                       "schema_version": 1, "occurred_at": "2026-11-23T10:00:00Z",
                       "workspace_id": workspace_id, "correlation_id": request_id,
                       "request_id": request_id, **fields}).encode()


async def rejections(infra: Infra, request_id: str) -> list[dict[str, Any]]:
    records = await read_topic(infra.bootstrap_servers, TOPIC_REJECTED)
    return [v for v in (json.loads(r.value) for r in records) if v["request_id"] == request_id]


async def test_valid_event_creates_a_video_once(
    intake: None, client: Client, infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    request_id = f"req-{unique}"
    raw = event(ws["id"], request_id, character_id=cid, scene_description=SCENE,
                platform="tiktok", duration_seconds=10)

    async def created() -> list[Any]:
        return list(await pool.fetch("SELECT * FROM videos WHERE workspace_id = $1",
                                     UUID(ws["id"])))

    await publish(infra, raw)
    videos = await eventually(created)
    assert videos[0]["type"] == "short"
    assert videos[0]["request_source"] == "kafka"
    # The same event again, and the same request under a new event id: nothing new.
    again = json.loads(raw)
    again["event_id"] = str(uuid4())
    await publish(infra, raw, json.dumps(again).encode())
    await asyncio.sleep(1.5)
    assert len(await created()) == 1
    assert await rejections(infra, request_id) == []


async def test_invalid_event_is_rejected_with_every_error(
    intake: None, client: Client, infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    request_id = f"bad-{unique}"
    await publish(infra, event(ws["id"], request_id, character_id=cid, scene_description="",
                               platform="youtube", type="reel", duration_seconds=3,
                               colour="red"))
    found = await eventually(lambda: rejections(infra, request_id))
    assert {e["field"] for e in found[0]["errors"]} == {
        "scene_description", "type", "duration_seconds", "colour"}
    assert await pool.fetchval("SELECT count(*) FROM videos WHERE workspace_id = $1",
                               UUID(ws["id"])) == 0


@pytest.mark.parametrize("case", ["no workspace", "foreign character", "reused request_id",
                                  "short balance"])
async def test_mismatches_are_rejected_not_guessed(
    intake: None, client: Client, infra: Infra, unique: str, case: str
) -> None:
    ws = await client.workspace(credits=5 if case == "short balance" else 1000)
    other = await client.workspace()
    cid = await client.character(ws["api_key"])
    request_id = f"{case.replace(' ', '-')}-{unique}"
    body = {"character_id": cid, "scene_description": SCENE}
    expected = {"no workspace": "workspace_id", "foreign character": "character_id",
                "reused request_id": "request_id", "short balance": "credits"}[case]
    if case == "no workspace":
        raw = event(str(uuid4()), request_id, **body)
    elif case == "foreign character":
        raw = event(other["id"], request_id, **body)
    elif case == "reused request_id":
        await publish(infra, event(ws["id"], request_id, **body))
        raw = event(ws["id"], request_id, **{**body, "duration_seconds": 20})
    else:
        raw = event(ws["id"], request_id, **body)
    await publish(infra, raw)
    found = await eventually(lambda: rejections(infra, request_id))
    assert [e["field"] for e in found[0]["errors"]] == [expected]


@pytest.mark.parametrize("garbage", [b"\xff\xfe not json", b"[]", b'{"event_type": "x"}', b"",
                                     b"x" * 900_000])
async def test_unparseable_messages_go_to_the_dlq_and_do_not_stall(
    intake: None, client: Client, infra: Infra, pool: asyncpg.Pool, unique: str, garbage: bytes
) -> None:
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    key = f"garbage-{unique}".encode()
    await publish(infra, garbage, key=key)
    await publish(infra, event(ws["id"], f"after-{unique}", character_id=cid,
                               scene_description=SCENE), key=key)

    async def dead() -> list[dict[str, Any]]:
        records = await read_topic(infra.bootstrap_servers, TOPIC_DLQ)
        return [json.loads(r.value) for r in records if r.key == key]

    letters = await eventually(dead)
    # A large message's letter keeps its beginning: the whole of one, base64, would not fit
    # in a Kafka record, and its DLQ publish failed at every redelivery (the partition
    # stalled).
    assert base64.b64decode(letters[0]["original_value_b64"]) == garbage[:MAX_DEAD_ORIGINAL]
    assert (letters[0]["original_size"], letters[0]["original_truncated"]) == (
        len(garbage), len(garbage) > MAX_DEAD_ORIGINAL)
    assert letters[0]["source_topic"] == TOPIC_REQUESTED
    assert letters[0]["reason"]
    # The valid event behind the garbage on the same partition is processed.
    await eventually(lambda: pool.fetchval(
        "SELECT count(*) FROM videos WHERE workspace_id = $1", UUID(ws["id"])))


@pytest.mark.parametrize("field", ["caption", "request_id"])
async def test_a_nul_character_is_refused_without_stalling(
    intake: None, client: Client, infra: Infra, pool: asyncpg.Pool, unique: str, field: str
) -> None:
    """PostgreSQL cannot store U+0000: such an event used to fail its write at every
    redelivery, and no later event of its partition was applied. A request field with one is
    rejected (naming it); an envelope field, which a rejection would carry, sends the event
    to the DLQ."""
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    key = f"nul-{unique}".encode()
    request_id = f"nul-{unique}"
    if field == "caption":
        raw = event(ws["id"], request_id, character_id=cid, scene_description=SCENE,
                    caption="a\x00b")
    else:
        raw = event(ws["id"], f"{request_id}\x00", character_id=cid, scene_description=SCENE)
    await publish(infra, raw, key=key)
    await publish(infra, event(ws["id"], f"after-{unique}", character_id=cid,
                               scene_description=SCENE), key=key)
    if field == "caption":
        found = await eventually(lambda: rejections(infra, request_id))
        assert found[0]["errors"] == [
            {"field": "caption", "message": "must not contain the NUL character (U+0000)"}]
    else:
        async def dead() -> list[dict[str, Any]]:
            records = await read_topic(infra.bootstrap_servers, TOPIC_DLQ)
            return [json.loads(r.value) for r in records if r.key == key]

        letters = await eventually(dead)
        assert "request_id" in letters[0]["reason"]
        assert "NUL" in letters[0]["reason"]
    # The valid event behind it on the same partition is applied.
    await eventually(lambda: pool.fetchval(
        "SELECT count(*) FROM videos WHERE workspace_id = $1", UUID(ws["id"])))


async def test_a_megabyte_of_unknown_fields_is_rejected_in_a_record_kafka_takes(
    intake: None, client: Client, infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    """Naming each of 20,000 unknown fields made a rejection of several megabytes, which
    Kafka refuses: the first 100 are named, then how many more."""
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    request_id = f"wide-{unique}"
    junk = {f"unknown_field_{n:06d}_{'x' * 20}": 0 for n in range(20_000)}
    raw = event(ws["id"], request_id, character_id=cid, scene_description=SCENE, **junk)
    assert 900_000 < len(raw) < 1_000_000
    key = f"wide-{unique}".encode()
    await publish(infra, raw, key=key)
    await publish(infra, event(ws["id"], f"after-{unique}", character_id=cid,
                               scene_description=SCENE), key=key)
    [rejection] = await eventually(lambda: rejections(infra, request_id))
    assert len(rejection["errors"]) == 101
    assert rejection["errors"][0] == {"field": "unknown_field_000000_" + "x" * 20,
                                      "message": "unknown field"}
    assert rejection["errors"][-1] == {"field": "body", "message": "and 19,900 more errors"}
    # The valid event behind it on the same partition is applied.
    await eventually(lambda: pool.fetchval(
        "SELECT count(*) FROM videos WHERE workspace_id = $1", UUID(ws["id"])))
