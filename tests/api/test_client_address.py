"""The client address (``X-Forwarded-For`` from trusted proxies only) and the limiter failing open without Redis."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import pytest

from api.context import client_address, limit_key
from api.ratelimit import Limit, Limiter
from tests.harness.services import refusing_port
from twofa.settings import parse_networks

PROXIES = parse_networks("10.0.0.0/8, ::1")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # not a proxy: its header is ignored
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", "203.0.113.9, 10.1.1.1", "203.0.113.9"),  # the nearest hop that is not a proxy
        ("10.0.0.2", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # what the client wrote itself is not believed
        ("10.0.0.2", "<script>", "10.0.0.2"),
        ("10.0.0.2", "1" * 60, "10.0.0.2"),
        ("10.0.0.2", "fe80::1%" + "x" * 50, "10.0.0.2"),  # a zone id is no client's
        ("10.0.0.2", "::ffff:203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", "10.0.0.3", "10.0.0.3"),  # every hop a proxy: the farthest
        ("::1", "2001:db8::5", "2001:db8::5"),
        ("10.0.0.2", None, "10.0.0.2"),
    ],
)
def test_the_client_address(peer: str, forwarded: str | None, client: str) -> None:
    assert str(client_address(peer, forwarded, PROXIES)) == client
    assert client_address(peer, "203.0.113.9", ()) == ipaddress.ip_address(peer)  # no proxy named: the peer


def test_ipv6_clients_are_counted_per_64() -> None:
    assert limit_key(ipaddress.ip_address("2001:db8:1:2::5")) == limit_key(ipaddress.ip_address("2001:db8:1:2:ff::1"))
    assert limit_key(ipaddress.ip_address("2001:db8:1:3::5")) != limit_key(ipaddress.ip_address("2001:db8:1:2::5"))
    assert limit_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"


def test_without_redis_the_limits_fail_open_and_say_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with refusing_port() as port:
        limiter = Limiter(f"redis://127.0.0.1:{port}/0")  # nothing listens there
        one = Limit("ip:192.0.2.1", 1)
        with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
            assert [limiter.hit(one) for _ in range(3)] == [None] * 3
            assert limiter.spent(one) is None
            assert asyncio.run(limiter.ahit(one)) is None
    assert len(caplog.records) == 1
    assert "rate-limit store unreachable" in caplog.records[0].getMessage()
