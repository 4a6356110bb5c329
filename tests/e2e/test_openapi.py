"""The API description is generated from the code, and fuzzing it finds no server error."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import Stack, call_api

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    key: str = call_api("POST", f"{stack.api_url}/v1/admin/workspaces", stack.admin_token,
                        {"name": "fuzz", "credits": 100_000})[
        "api_key"]
    return key


@pytest.fixture(scope="module")
def openapi_doc(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(stack.api_url + "/openapi.json", timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def test_document_covers_the_api_and_the_request_contract(openapi_doc: dict[str, Any]) -> None:
    paths = openapi_doc["paths"]
    assert {"/v1/videos", "/v1/videos/{id}", "/v1/characters", "/v1/models", "/v1/credits",
            "/v1/admin/workspaces", "/healthz", "/readyz"} <= set(paths)
    request = openapi_doc["components"]["schemas"]["VideoRequest"]
    assert request["additionalProperties"] is False
    assert request["required"] == ["character_id", "scene_description"]
    duration = request["properties"]["duration_seconds"]
    assert (duration["minimum"], duration["maximum"], duration["default"]) == (5, 60, 8)
    responses = paths["/v1/videos"]["post"]["responses"]
    assert set(responses) >= {"202", "402", "409", "422", "429"}
    # The answers' headers: every answer's id, the 202's location and replay, retry waits.
    assert set(responses["202"]["headers"]) == {"X-Request-ID", "Location",
                                                "Idempotent-Replayed"}
    assert set(responses["429"]["headers"]) == {"X-Request-ID", "Retry-After"}
    assert set(responses["409"]["headers"]) == {"X-Request-ID", "Retry-After"}
    assert all("X-Request-ID" in answer["headers"] for path in paths.values()
               for op in path.values() for answer in op["responses"].values())


def test_docs_page_renders_the_document(stack: Stack) -> None:
    with urllib.request.urlopen(stack.api_url + "/docs", timeout=10) as resp:
        html = resp.read().decode()
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in html


def test_fuzzing_finds_no_server_error(stack: Stack, api_key: str, tmp_path: Path) -> None:
    """schemathesis (its CLI: the pytest plugin does not support pytest 9) generates requests
    for every operation from /openapi.json, valid and invalid, and checks for 5xx answers."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         f"{stack.api_url}/openapi.json", "--checks", "not_a_server_error",
         "-H", f"Authorization: Bearer {api_key}", "--max-examples", "25", "--seed", "1",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    junit = next(tmp_path.glob("*.xml")).read_text()
    assert 'tests="0"' not in junit  # it ran operations
