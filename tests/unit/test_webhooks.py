"""Which addresses a webhook may go to, and the resolver that checks them at connect time."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from services.finalizer.webhooks import AddressRefused, PublicResolver
from shared.webhooks import refusal


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1",
    "::ffff:127.0.0.1",                  # IPv4-mapped
    "2002:7f00:1::",                     # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",                 # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1",                   # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",                    # NAT64 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
])
def test_internal_addresses_are_refused(address: str) -> None:
    reason = refusal(address)
    assert reason is not None
    assert reason.startswith("the host resolves to a non-public address ("), reason


@pytest.mark.parametrize("address", [
    "93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


class _Fixed(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=address, port=port, family=family, proto=0,
                              flags=0) for address in self.addresses]

    async def close(self) -> None:
        self.closed = True


async def test_the_resolver_passes_public_addresses_on() -> None:
    resolver = PublicResolver(_Fixed("93.184.216.34", "2606:4700:4700::1111"))
    results = await resolver.resolve("hooks.example", 443)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700:4700::1111"]


async def test_the_resolver_refuses_a_host_with_any_internal_address() -> None:
    inner = _Fixed("93.184.216.34", "10.0.0.7")
    resolver = PublicResolver(inner)
    with pytest.raises(AddressRefused, match=r"non-public address \(10\.0\.0\.7\)"):
        await resolver.resolve("hooks.example", 443)
    await resolver.close()
    assert inner.closed
