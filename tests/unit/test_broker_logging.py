"""The brokers' logs follow the service's level: FastStream's per-batch lines are DEBUG."""

from __future__ import annotations

import logging
from typing import Any

from faststream.kafka import TestKafkaBroker

from shared.kafka import make_broker


async def test_per_message_lines_are_debug_on_a_logger_that_follows_the_service() -> None:
    broker = make_broker("127.0.0.1:9", "influgen-test")
    got: list[bytes] = []

    @broker.subscriber("t")
    async def handle(body: bytes) -> None:
        got.append(body)

    async with TestKafkaBroker(broker) as test:
        logger: Any = broker.config.logger.logger.logger  # the test client's stand-in
        await test.publish(b"x", "t")
        lines = {call.args[1]: call.args[0] for call in logger.log.call_args_list}
    assert got == [b"x"]
    assert lines == {"Received": logging.DEBUG, "Processed": logging.DEBUG}
    # Outside the test client: one of ours, at the level the service configured (the root's),
    # not under `faststream`, whose logger FastStream sets to INFO with its own handler.
    ours, root = logging.getLogger("influgen.kafka.influgen-test"), logging.getLogger()
    before = root.level
    try:
        for level in (logging.WARNING, logging.DEBUG):
            root.setLevel(level)
            assert ours.getEffectiveLevel() == level
    finally:
        root.setLevel(before)
