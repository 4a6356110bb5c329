from __future__ import annotations

import json

from shared.asyncapi import build
from shared.events import ALL_TOPICS
from shared.settings import ROOT


def test_every_topic_is_described_with_its_producers_and_consumers() -> None:
    doc = build()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(ALL_TOPICS)
    operations = doc["operations"]
    sends = {k for k, v in operations.items() if v["action"] == "send"}
    receives = {k for k, v in operations.items() if v["action"] == "receive"}
    assert "api: video.job.queued" in sends
    assert "generator: video.generation.failed" in sends
    assert receives == {"api:influgen.video.requested.v1", "generator:influgen.video.jobs.v1",
                        "finalizer:influgen.video.generated.v1",
                        "webhooks:influgen.video.completed.v1"}
    assert "VideoJobQueued" in doc["components"]["schemas"]


def test_the_committed_document_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert committed == build(), "run `make asyncapi` and commit docs/asyncapi.json"
