"""One round of the fault-injection harness inside `make test` (`make test-faults` runs
three): kill -9 of each service, of the Kafka broker, and an immediate stop of PostgreSQL,
under steady HTTP and Kafka load with a provider failing 30% of its calls."""

from __future__ import annotations

import json

import pytest

from tests.fault_harness import Config, run

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
async def test_one_round_of_faults_loses_nothing() -> None:
    report = await run(Config(rounds=1, between_faults_seconds=2.0))
    summary = json.dumps({k: report[k] for k in ("requests", "outcomes", "faults",
                                                 "problems")}, indent=1)
    assert report["problem_count"] == 0, summary
    assert report["accepted"] >= 100, summary  # the load really ran through the faults
    assert {f["target"] for f in report["faults"]} == {
        "api", "generator", "finalizer", "kafka", "postgres"}
    # the provider stand-in did fail calls, and some jobs still succeeded through it
    assert report["provider_calls_failed_on_purpose"] > 0, summary
    assert report["outcomes"].get("failed", 0) < report["items"], summary
