"""The URLs the API stores for someone to fetch (webhook endpoints, reference images)."""

from __future__ import annotations

from urllib.parse import urlsplit


def split_http_url(url: str) -> tuple[str, int | None] | str:
    """`url`'s host and port (None if not given) if it is an http(s) URL with a host and a
    usable port; otherwise why not."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # say, an unclosed IPv6 bracket
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http or https URL with a host"
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = 0
    if port == 0:
        return "the port must be a number from 1 to 65535"
    return parts.hostname, port


def http_url(url: str) -> str:
    """A validator: `url` if `split_http_url` accepts it, else ValueError with the reason."""
    if isinstance(problem := split_http_url(url), str):
        raise ValueError(problem)
    return url
