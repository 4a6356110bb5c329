"""API keys: random, shown once, stored as a SHA-256 hash (keys carry 256 bits of entropy,
so a fast hash is the right tool; no salt or KDF is needed as for passwords)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

KEY_PREFIX = "ifg_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _raw(text: str) -> bytes:
    """A header's bytes: aiohttp decodes headers as UTF-8 with `surrogateescape`, so bytes
    that are not UTF-8 come back as they were instead of failing to encode (a 500)."""
    return text.encode("utf-8", "surrogateescape")


def hash_key(key: str) -> bytes:
    return hashlib.sha256(_raw(key)).digest()


def token_matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(_raw(given), expected.encode())


class KeyCache:
    """Workspaces by API key hash for `ttl` seconds: saves a query on every request.

    A key replaced (`forget`) stops working in this process at once and in the others within
    `ttl`."""

    def __init__(self, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}

    def get(self, key_hash: bytes, now: float) -> Any:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < now:
            return None
        return entry[1]

    def put(self, key_hash: bytes, value: Any, now: float) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key_hash] = (now + self._ttl, value)

    def forget(self, workspace_id: object) -> None:
        """Drop the workspace's cached keys (its key was replaced)."""
        for key_hash, (_, value) in list(self._entries.items()):
            if getattr(value, "id", None) == workspace_id:
                del self._entries[key_hash]
