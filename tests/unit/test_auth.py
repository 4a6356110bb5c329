"""API keys and their cache."""

from __future__ import annotations

from uuid import uuid4

from services.api.auth import KeyCache, hash_key, new_api_key
from services.api.handlers import Workspace


def test_the_cache_keeps_a_key_for_its_time_to_live_and_forgets_a_replaced_one() -> None:
    cache = KeyCache(ttl=10)
    mine, other = (Workspace(id=uuid4(), name=n, sandbox=False) for n in ("a", "b"))
    old, new, others = hash_key(new_api_key()), hash_key(new_api_key()), hash_key("k")
    cache.put(old, mine, now=0)
    cache.put(others, other, now=0)
    assert cache.get(old, now=9.9) == mine
    assert cache.get(old, now=10.1) is None  # other processes: refused within the ttl
    cache.put(old, mine, now=20)
    cache.put(new, mine, now=20)
    cache.forget(mine.id)
    assert (cache.get(old, now=21), cache.get(new, now=21)) == (None, None)
    cache.put(others, other, now=20)
    assert cache.get(others, now=21) == other
