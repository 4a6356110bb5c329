"""`python -m devstack.topics`: wait for the cluster named by KAFKA_BOOTSTRAP_SERVERS and
create the topics of SPEC section 7 (used by docker-compose; `make up` does the same)."""

from __future__ import annotations

import asyncio
import os

from devstack.kafka import wait_ready
from shared.kafka import ensure_topics


def main() -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    partitions = int(os.environ.get("INFLUGEN_TOPIC_PARTITIONS", "6"))
    wait_ready(bootstrap, timeout=120)
    created = asyncio.run(ensure_topics(bootstrap, partitions))
    print(f"topics created: {created or 'none (all existed)'}")


if __name__ == "__main__":
    main()
