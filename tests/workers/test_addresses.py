"""Push-service addresses looked up once per origin for a while, and connects that use them.

The connects are real TLS connections to the simulator by the name `localhost` (its
certificate names it), resolved by the system resolver; a counting resolver in front of
it shows how often it was asked.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from service.endpoints import parse_endpoint
from workers.addresses import AddressCache, system_resolve
from workers.http1 import Pool, default_ssl_context


class CountingResolver:
    """The system resolver, counted; `answers` replaces its answer for a host."""

    def __init__(self, answers: dict[str, list] | None = None):
        self.calls: list[str] = []
        self.answers = answers or {}

    async def __call__(self, host: str, port: int) -> list:
        self.calls.append(host)
        await asyncio.sleep(0.01)  # a resolver's round trip, so concurrent connects overlap it
        if host in self.answers:
            return self.answers[host]
        return await system_resolve(host, port)


def _pool(sim) -> Pool:
    port = sim.ports[0]
    endpoint = parse_endpoint(f"https://localhost:{port}/push/x", (f"localhost:{port}",))
    return Pool(endpoint, default_ssl_context())


def _run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_concurrent_connects_share_one_lookup_and_tls_still_names_the_host(sim):
    resolver = CountingResolver()
    addresses = AddressCache(resolve=resolver)
    pool = _pool(sim)

    async def thirty():
        loop = asyncio.get_running_loop()
        connections = await asyncio.gather(*(pool.connect(loop, addresses) for _ in range(30)))
        more = await pool.connect(loop, addresses)  # later, within the TTL: no lookup
        for connection in [*connections, more]:
            assert connection.usable
            assert connection.transport.get_extra_info("ssl_object").server_hostname == "localhost"
            connection.close()

    _run(thirty())
    assert resolver.calls == ["localhost"]


def test_a_lookup_is_asked_again_after_its_ttl_and_a_failure_is_not_remembered():
    now = [1000.0]
    answers = {"push.example": [(socket.AF_INET, ("127.0.0.1", 443))]}
    resolver = CountingResolver(answers)
    addresses = AddressCache(ttl=30.0, clock=lambda: now[0], resolve=resolver)

    async def scenario():
        first = await addresses.lookup("push.example", 443)
        now[0] += 29.0
        assert await addresses.lookup("push.example", 443) == first and len(resolver.calls) == 1
        now[0] += 2.0
        await addresses.lookup("push.example", 443)
        assert len(resolver.calls) == 2
        answers["push.example"] = []  # a resolver that answers nothing
        now[0] += 31.0
        for _ in range(2):
            with pytest.raises(socket.gaierror):
                await addresses.lookup("push.example", 443)
        assert len(resolver.calls) == 4  # not cached: asked again each time

    _run(scenario())


def test_an_address_that_refuses_goes_to_the_back_and_the_next_one_connects(sim):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = (socket.AF_INET, ("127.0.0.1", closed.getsockname()[1]))  # bound, never listening
        alive = (socket.AF_INET, ("127.0.0.1", sim.ports[0]))
        resolver = CountingResolver({"localhost": [dead, alive]})
        addresses = AddressCache(resolve=resolver)
        pool = _pool(sim)

        async def two_connects():
            loop = asyncio.get_running_loop()
            for _ in range(2):
                connection = await pool.connect(loop, addresses)
                assert connection.transport.get_extra_info("peername")[1] == sim.ports[0]
                connection.close()
            return await addresses.lookup("localhost", sim.ports[0])

        assert _run(two_connects()) == [alive, dead]  # the dead one is tried last from now on
        resolver.answers["localhost"] = [dead]
        addresses = AddressCache(resolve=resolver)

        async def only_dead():
            await pool.connect(asyncio.get_running_loop(), addresses)

        with pytest.raises(ConnectionRefusedError):
            _run(only_dead())
