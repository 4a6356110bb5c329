"""The `influgen` command against the real services, as a script would use it."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from devstack.stack import Stack

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "influgen")
SCENE = "Walking on a beach at sunset, slow push-in, calm mood, wide shot"


def influgen(stack: Stack, *args: str, key: str | None = None, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "INFLUGEN_API_URL": stack.api_url,
           "INFLUGEN_ADMIN_TOKEN": stack.admin_token,
           "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
           "INFLUGEN_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    if key:
        env["INFLUGEN_API_KEY"] = key
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, input=stdin,
                          timeout=120, check=False)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_scripted_session(stack: Stack) -> None:
    ws = as_json(influgen(stack, "--json", "admin", "create-workspace", "cli", "--credits",
                          "100", "--sandbox"))
    key = ws["api_key"]
    character = as_json(influgen(stack, "--json", "characters", "create", "Mila",
                                 "--review-mode", "manual", key=key))
    video = as_json(influgen(stack, "--json", "videos", "create", "--character",
                             character["id"], "--scene", SCENE, "--duration", "5",
                             "--hashtag", "#beach", "--wait", key=key))
    assert (video["status"], video["hashtags"]) == ("ready", ["beach"])
    waited = influgen(stack, "videos", "create", "--character", character["id"], "--scene",
                      SCENE, "--duration", "5", "--wait", key=key)
    assert waited.returncode == 0, waited.stderr
    # the live progress lines, from the first state to the last (the queue position shown
    # while queued is timing-dependent here; tests/unit/test_cli.py covers it)
    assert "0%  queued / queued" in waited.stderr
    assert "100%  ready / succeeded" in waited.stderr
    reviewed = as_json(influgen(stack, "--json", "videos", "review", video["id"], "approve",
                                key=key))
    assert reviewed["status"] == "approved"
    human = influgen(stack, "credits", key=key)
    assert human.returncode == 0
    assert "available 90" in human.stdout
    listed = as_json(influgen(stack, "--json", "videos", "list", "--status", "approved",
                              key=key))
    assert [v["id"] for v in listed["items"]] == [video["id"]]
    again = influgen(stack, "admin", "create-workspace", "cli-once", "--idempotency-key",
                     f"cli-{ws['id']}")
    assert again.returncode == 0, again.stderr
    again = influgen(stack, "admin", "create-workspace", "cli-once", "--idempotency-key",
                     f"cli-{ws['id']}")
    assert (again.returncode, "409 Workspace created before" in again.stderr) == (1, True)
    replaced = as_json(influgen(stack, "--json", "admin", "replace-key", ws["id"]))
    assert replaced["id"] == ws["id"]
    assert replaced["api_key"] != key
    assert influgen(stack, "credits", key=key).returncode == 1
    assert "available 90" in influgen(stack, "credits", key=replaced["api_key"]).stdout


def test_errors_are_readable_and_exit_non_zero(stack: Stack) -> None:
    ws = as_json(influgen(stack, "--json", "admin", "create-workspace", "cli-bad"))
    bad = influgen(stack, "videos", "create", "--character", "not-a-uuid", "--scene", " ",
                   "--duration", "99", key=ws["api_key"])
    assert bad.returncode == 1
    assert "422" in bad.stderr
    assert "duration_seconds" in bad.stderr
    assert "scene_description" in bad.stderr
    assert influgen(stack, "credits", key="wrong").returncode == 1
    assert influgen(stack, "videos").returncode == 2  # usage
    unreachable = subprocess.run([CLI, "--url", "http://127.0.0.1:9", "--api-key", "k",
                                  "credits"], capture_output=True, text=True, timeout=60,
                                 check=False)
    assert unreachable.returncode == 3


def test_events_publish_and_tail(stack: Stack) -> None:
    ws = as_json(influgen(stack, "--json", "admin", "create-workspace", "cli-events",
                          "--credits", "100", "--sandbox"))
    key = ws["api_key"]
    character = as_json(influgen(stack, "--json", "characters", "create", "Theo",
                                 "--review-mode", "autopilot", key=key))
    event = {"workspace_id": ws["id"], "correlation_id": "cli", "character_id":
             character["id"], "scene_description": SCENE, "duration_seconds": 5}
    published = as_json(influgen(stack, "--json", "events", "publish", "-",
                                 stdin=json.dumps(event)))
    assert published["request_id"]
    tailed = as_json(influgen(stack, "--json", "events", "tail", "--from-beginning",
                              "--workspace", ws["id"], "--type", "video.approved", "--max",
                              "1"))
    assert tailed["event_type"] == "video.approved"
    assert tailed["video"]["character_id"] == character["id"]


def _letters_of(stack: Stack, key: bytes) -> list[dict[str, Any]]:
    letters = as_json(influgen(stack, "--json", "dlq", "list", "--source-topic",
                               "influgen.video.requested.v1"))
    return [x for x in letters if x["original_key_b64"] == base64.b64encode(key).decode()]


def test_a_dead_letter_is_listed_and_replayed_to_its_topic(stack: Stack) -> None:
    """After a fix, an operator sends a dead-lettered message again: the replay publishes
    its bytes, as they were, to the topic it came from (here it is refused again, so its
    second letter shows it arrived there, at another offset)."""
    key = f"cli-dlq-{uuid4()}".encode()
    asyncio.run(_publish(stack.bootstrap, "influgen.video.requested.v1", b"{oops", key))
    letters: list[dict[str, Any]] = []
    for _ in range(100):
        if letters := _letters_of(stack, key):
            break
        time.sleep(0.1)
    [first] = letters
    assert first["consumer"] == "api"
    replayed = as_json(influgen(stack, "--json", "dlq", "replay", first["event_id"]))
    assert replayed["topic"] == "influgen.video.requested.v1"
    for _ in range(100):
        if len(letters := _letters_of(stack, key)) == 2:
            break
        time.sleep(0.1)
    assert [(x["partition"], x["offset"]) for x in letters] == [
        (first["partition"], first["offset"]), (replayed["partition"], replayed["offset"])]
    assert {x["original_value_b64"] for x in letters} == {base64.b64encode(b"{oops").decode()}
    assert letters[1]["event_id"] != first["event_id"]
    missing = influgen(stack, "dlq", "replay", str(uuid4()))
    assert (missing.returncode, "no dead letter" in missing.stderr) == (1, True)
    unreachable = subprocess.run([CLI, "dlq", "list", "--bootstrap", "127.0.0.1:9"],
                                 capture_output=True, text=True, timeout=60, check=False)
    assert (unreachable.returncode, "cannot reach Kafka" in unreachable.stderr) == (3, True)


async def _publish(bootstrap: str, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
