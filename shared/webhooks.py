"""Webhooks the Standard Webhooks way (https://www.standardwebhooks.com/): signing, and
which URLs may receive them.

Headers: `webhook-id` (the completion event's id, the same on every retry),
`webhook-timestamp` (seconds since the epoch, at each attempt) and `webhook-signature`
(`v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the secret's
base64 part after `whsec_`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Sequence

from shared.urls import split_http_url

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secrets: Sequence[str], msg_id: str, timestamp: int,
            body: bytes) -> dict[str, str]:
    """A delivery's headers, signed with each of `secrets` (the endpoint's, and for a while
    after it was replaced the previous one too): space-separated, as Standard Webhooks
    lists several signatures; a receiver accepts a delivery if any one verifies."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
            "Content-Type": "application/json"}


class UrlRefused(ValueError):
    pass


#: NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(address: str) -> str | None:
    """Why a webhook may not be sent to the IP `address`, or None if it may: the address,
    or the IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), is private,
    loopback, link-local or otherwise not public."""
    ip = ipaddress.ip_address(address)
    inner: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        inner += [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
        if ip.teredo is not None:
            inner.append(ip.teredo[1])
        if ip in _NAT64:
            inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in inner:
        if not candidate.is_global:
            return f"the host resolves to a non-public address ({candidate})"
    return None


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that are not http(s), or that resolve to a private, loopback, link-local
    or otherwise internal address (unless the operator allows them). Called at registration
    and again before each delivery, for a clear reason; the finalizer's HTTP client also
    checks the addresses it connects to (`services.finalizer.webhooks.PublicResolver`),
    since DNS can answer differently a moment later."""
    if isinstance(split := split_http_url(url), str):
        raise UrlRefused(split)
    host, port = split
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UrlRefused(f"the host does not resolve: {exc}") from None
    for info in infos:
        if (reason := refusal(str(info[4][0]))) is not None:
            raise UrlRefused(reason)
