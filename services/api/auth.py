"""API keys: random, shown once, stored as a SHA-256 hash (keys carry 256 bits of entropy,
so a fast hash is the right tool; no salt or KDF is needed as for passwords)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ifg_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def token_matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
