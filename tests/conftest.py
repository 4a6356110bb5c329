from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import asyncpg
import pytest

from tests.infra import Infra, start_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Real Kafka and PostgreSQL, started once for the session, migrations and topics ready."""
    from shared.db import migrate
    from shared.kafka import ensure_topics

    with start_infra() as found:
        asyncio.run(migrate(found.database_url))
        asyncio.run(ensure_topics(found.bootstrap_servers, partitions=6))
        yield found


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    from shared.db import create_pool

    p = await create_pool(infra.database_url, min_size=1, max_size=5)
    yield p
    await p.close()


@pytest.fixture
def unique() -> str:
    return uuid4().hex[:10]
