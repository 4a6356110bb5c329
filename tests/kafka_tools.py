"""Reading topics in tests, straight from the real broker."""

from __future__ import annotations

import json
from typing import Any

from shared.kafka import read_topic

__all__ = ["read_events", "read_topic"]


async def read_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The JSON objects on `topic`, skipping anything else: other tests put garbage on the
    shared topics on purpose."""
    events = []
    for record in await read_topic(bootstrap, topic):
        try:
            value = json.loads(record.value)
        except (ValueError, TypeError):
            continue
        if isinstance(value, dict):
            events.append(value)
    return events
