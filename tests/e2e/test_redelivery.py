"""What Kafka redelivers changes nothing; `up` again restarts only what is down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer

from devstack.proc import pid_alive
from devstack.stack import SERVICES, Stack
from tests.e2e.conftest import Api
from tests.e2e.test_pipeline import wait_terminal
from tests.kafka_tools import read_events, read_topic

pytestmark = pytest.mark.e2e


def _video_id(value: bytes) -> object:
    try:
        event = json.loads(value)
    except ValueError:
        return None  # garbage other tests put on the topic
    return event.get("video_id") if isinstance(event, dict) else None


async def test_duplicate_and_contradictory_outcomes_change_nothing(api: Api,
                                                                    stack: Stack) -> None:
    key = await api.workspace(sandbox=True)
    character = await api.character(key, "autopilot")
    created = await api.video(key, character, duration_seconds=5)
    done = await wait_terminal(api, key, created["id"])
    _, credits_before = await api.call("GET", "/v1/credits", key)
    records = await read_topic(stack.bootstrap, "influgen.video.generated.v1")
    [original] = [r for r in records if _video_id(r.value) == created["id"]]
    contradiction = json.loads(original.value)
    contradiction.update(event_id="00000000-0000-4000-8000-000000000001",
                         event_type="video.generation.failed", canceled=False,
                         error={"code": "provider_failed", "message": "late", "retryable": False})
    del contradiction["media"]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        for value in (original.value, original.value, json.dumps(contradiction).encode()):
            await producer.send_and_wait("influgen.video.generated.v1", value, key=original.key)
    finally:
        await producer.stop()
    await asyncio.sleep(2)
    _, after = await api.call("GET", f"/v1/videos/{created['id']}", key)
    _, credits_after = await api.call("GET", "/v1/credits", key)
    assert (after["status"], after["credits"]) == (done["status"], done["credits"])
    assert credits_after == credits_before
    completed = await read_events(stack.bootstrap, "influgen.video.completed.v1")
    assert len({e["event_id"] for e in completed if e["video"]["id"] == created["id"]}) == 1


def test_up_again_restarts_only_what_is_down(stack: Stack) -> None:
    before = {name: stack.service_pid(name) for name in SERVICES}
    stack.up()
    assert {name: stack.service_pid(name) for name in SERVICES} == before
    victim = before["finalizer"]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    while pid_alive(victim):
        time.sleep(0.01)
    stack.up()
    after = {name: stack.service_pid(name) for name in SERVICES}
    assert (after["api"], after["generator"]) == (before["api"], before["generator"])
    assert after["finalizer"] not in (None, victim)
