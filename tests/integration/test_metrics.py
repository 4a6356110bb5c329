"""/metrics: the pipeline's state, read from the database at each scrape."""

from __future__ import annotations

from uuid import uuid4

import asyncpg
import pytest

from tests.infra import Infra
from tests.integration.conftest import Client, serving_api

pytestmark = pytest.mark.integration
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


async def _scrape(client: Client) -> dict[str, float]:
    async with client.session.get(client.base + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines()
             if line.startswith("influgen_") and not line.startswith("influgen_api_"))}


async def test_the_pipeline_state_is_scraped_from_the_database(
        client: Client, pool: asyncpg.Pool) -> None:
    before = await _scrape(client)
    assert before["influgen_pipeline_state_up"] == 1
    ws = await client.workspace()
    cid = await client.character(ws["api_key"])
    # No generator and no publisher here: the job stays queued, its event in the outbox.
    status, _, _ = await client.call("POST", "/v1/videos", ws["api_key"],
                                     {"character_id": cid, "scene_description": SCENE})
    assert status == 202
    await pool.execute(
        "INSERT INTO outbox_dead (id, topic, key, event_id, payload, created_at, error)"
        " VALUES ((SELECT coalesce(max(id), 0) + 1000000 FROM outbox_dead), 't', 'k', $1,"
        " '\\x00', now(), 'too large')", uuid4())
    after = await _scrape(client)
    # The database is the suite's: other tests' rows count too, but these grew by ours.
    assert after['influgen_jobs{state="queued"}'] >= before['influgen_jobs{state="queued"}'] + 1
    assert after["influgen_jobs_oldest_queued_seconds"] > 0
    assert after["influgen_outbox_pending"] >= before["influgen_outbox_pending"] + 1
    assert after["influgen_outbox_oldest_seconds"] > 0
    assert after["influgen_outbox_dead"] == before["influgen_outbox_dead"] + 1
    assert "influgen_webhook_deliveries_pending" in after


async def test_a_scrape_without_the_database_still_answers_and_says_so(
        infra: Infra, pool: asyncpg.Pool) -> None:
    async with serving_api(infra, pool, "test-metrics") as api:
        await pool.close()  # the app's pool: every read fails now
        state = await _scrape(api)
        assert state["influgen_pipeline_state_up"] == 0
