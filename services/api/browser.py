"""Headers for browsers: every answer says its content type is to be believed
(`X-Content-Type-Options: nosniff`), and the HTML pages (the generation form and the API
reference) carry a Content-Security-Policy that lets them run only their own scripts and
styles and talk only to this API, and be framed by nobody. The form keeps an API key in the
browser's storage: a script injected into the page must not run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

Hook = Callable[[web.BaseRequest, web.StreamResponse], Awaitable[None]]


def policy(public_url: str) -> str:
    """The pages' policy; media may come from the public URL's origin (`INFLUGEN_PUBLIC_URL`,
    which may be another host than the page's, such as a CDN)."""
    parts = urlsplit(public_url)
    media = f" {parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme in (
        "http", "https") and parts.netloc else ""
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
        f"img-src 'self'{media}", f"media-src 'self'{media}", "base-uri 'none'",
        "form-action 'self'", "frame-ancestors 'none'"])


def browser_headers(public_url: str) -> Hook:
    """An `on_response_prepare` hook setting the headers above."""
    csp = policy(public_url)

    async def add(request: web.BaseRequest, response: web.StreamResponse) -> None:
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.content_type == "text/html":
            response.headers["Content-Security-Policy"] = csp
            response.headers["Referrer-Policy"] = "no-referrer"

    return add
