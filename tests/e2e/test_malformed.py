"""1,000 malformed or random messages: DLQ or rejection, no stall, valid traffic completes."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from devstack.stack import Stack
from shared.events import TOPIC_DLQ, TOPIC_GENERATED, TOPIC_REJECTED, TOPIC_REQUESTED
from shared.kafka import topic_partitions
from tests.e2e.conftest import Api
from tests.e2e.test_pipeline import SCENE, wait_terminal
from tests.kafka_tools import read_events, read_topic

pytestmark = pytest.mark.e2e
COUNT = 1000


def garbage(rng: random.Random, workspace: str, tag: str, i: int) -> tuple[bytes, str]:
    """A bad message and what must become of it: 'dlq' or 'rejected'."""
    kind = i % 8
    if kind == 0:
        return rng.randbytes(rng.randint(0, 64)), "dlq"
    if kind == 1:
        return json.dumps(rng.choice([[], 42, "x", None, [1, {"a": 2}]])).encode(), "dlq"
    if kind == 2:
        return b'{"event_type": "video.requested", "workspace_id": ', "dlq"
    if kind == 3:
        return json.dumps({"workspace_id": "not-a-uuid", "request_id": f"g{i}"}).encode(), "dlq"
    if kind == 4:  # a well-formed event that breaks the request rules
        return json.dumps({"workspace_id": workspace, "request_id": f"{tag}-bad-{i}",
                           "scene_description": "", "duration_seconds": rng.choice(
                               [0, 61, "8", 8.5]), "colour": "red"}).encode(), "rejected"
    if kind == 6:  # text PostgreSQL cannot store: in a request field, then in the envelope
        return json.dumps({"workspace_id": workspace, "request_id": f"{tag}-nul-{i}",
                           "character_id": str(uuid4()), "scene_description": "a\x00b"}
                          ).encode(), "rejected"
    if kind == 7:
        return json.dumps({"workspace_id": workspace, "request_id": f"{tag}-nul\x00{i}",
                           "scene_description": "x"}).encode(), "dlq"
    return json.dumps({"workspace_id": str(uuid4()), "request_id": f"{tag}-nows-{i}",
                       "character_id": str(uuid4()), "scene_description": "x"}).encode(), \
        "rejected"


async def lag(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = await topic_partitions(bootstrap, [topic])
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)


async def test_garbage_ends_in_the_dlq_or_as_rejections_without_stalling(
    api: Api, stack: Stack
) -> None:
    rng = random.Random(7)
    key = await api.workspace(credits=10_000, sandbox=True)
    character = await api.character(key, "autopilot")
    # The API does not show a workspace its own id: read it from a completion event.
    video = await api.video(key, character, duration_seconds=5)
    await wait_terminal(api, key, video["id"])
    completed = await read_events(stack.bootstrap, "influgen.video.completed.v1")
    workspace = next(e["workspace_id"] for e in completed if e["video"]["id"] == video["id"])

    expected: dict[str, int] = {"dlq": 0, "rejected": 0}
    valid: list[str] = []
    tag = uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(COUNT):
            topic = TOPIC_REQUESTED if i % 2 == 0 else TOPIC_GENERATED
            value, fate = garbage(rng, workspace, tag, i)
            if topic == TOPIC_GENERATED:
                fate = "dlq"  # nothing on the generated topic may be judged as a request
                if value.startswith(b"{") and b"request_id" in value:
                    value = value.replace(b"request_id", b"nothing")
            expected[fate] += 1
            await producer.send(topic, value, key=f"{tag}-{i}".encode())
            if i % 100 == 50:  # valid traffic between the garbage
                request_id = f"{tag}-valid-{i}"
                valid.append(request_id)
                await producer.send(TOPIC_REQUESTED, json.dumps({
                    "workspace_id": workspace, "request_id": request_id,
                    "character_id": character, "scene_description": SCENE,
                    "duration_seconds": 5}).encode(), key=request_id.encode())
        await producer.flush()
    finally:
        await producer.stop()

    for _ in range(240):
        lags = [await lag(stack.bootstrap, "influgen-api", TOPIC_REQUESTED),
                await lag(stack.bootstrap, "influgen-finalizer", TOPIC_GENERATED)]
        if lags == [0, 0]:
            break
        await asyncio.sleep(0.5)
    assert lags == [0, 0]  # nobody stalled

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if r.key and r.key.decode().startswith(tag)]

    dead = mine(await read_topic(stack.bootstrap, TOPIC_DLQ))
    rejected = [e["request_id"] for e in await read_events(stack.bootstrap, TOPIC_REJECTED)]
    assert len(dead) == expected["dlq"]
    assert len({r for r in rejected if r.startswith(f"{tag}-")}) == expected["rejected"]
    _, listing = await api.call("GET", "/v1/videos?limit=100", key)
    assert len(listing["items"]) == 1 + len(valid)
    for item in listing["items"]:
        done = await wait_terminal(api, key, item["id"])
        assert done["status"] == "approved"
