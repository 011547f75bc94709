"""Push-service addresses: looked up once per origin for a while, not once per connection.

Why: `loop.create_connection(host, ...)` resolves the name on every call, through
libuv's thread pool (four threads unless UV_THREADPOOL_SIZE says otherwise) and the
system resolver. A worker ramping up to a push service opens hundreds of connections in
a second; that many DNS queries, four at a time, would hold the ramp back by the
resolver's round trips (and some resolvers rate-limit a client that asks that often).
aiohttp's connector caches lookups for the same reason (`ttl_dns_cache`, 10 s by
default); this client is hand-written (see `workers.delivery`), so the cache is too.

A failed lookup is never cached: the next connect asks again, and its `socket.gaierror`
reaches the sender as before (a host that does not exist is told apart from a resolver
that is down there, in `workers.delivery`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Long enough that a ramp asks once; short enough to follow a push service moving its
# addresses (their records live 60-300 s).
ADDRESS_TTL = 30.0

Address = tuple[int, Any]  # (address family, socket address as getaddrinfo gives it)


async def system_resolve(host: str, port: int) -> list[Address]:
    """The system resolver (`getaddrinfo`, in the loop's thread pool), stream sockets only."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


class AddressCache:
    """Addresses of (host, port), shared by every connect of one worker's event loop.

    Concurrent connects to a host not yet known wait for one lookup between them.
    """

    def __init__(
        self,
        ttl: float = ADDRESS_TTL,
        clock: Callable[[], float] = time.monotonic,
        resolve: Callable[[str, int], Awaitable[list[Address]]] | None = None,
    ):
        self.ttl, self.clock = ttl, clock
        self.resolve = resolve or system_resolve
        self._known: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._looking_up: dict[tuple[str, int], asyncio.Future[list[Address]]] = {}

    async def lookup(self, host: str, port: int) -> list[Address]:
        """The addresses to connect to, in the resolver's order.

        Raises:
            socket.gaierror: the name does not resolve (not remembered).
        """
        key = (host, port)
        known = self._known.get(key)
        if known is not None and known[0] > self.clock():
            return known[1]
        pending = self._looking_up.get(key)
        if pending is None:
            pending = self._looking_up[key] = asyncio.ensure_future(self._resolve(host, port))
            pending.add_done_callback(lambda done: self._finished(key, done))
        # A connect that gives up (its timeout) must not cancel the lookup the others wait for.
        return await asyncio.shield(pending)

    def _finished(self, key: tuple[str, int], done: asyncio.Future[list[Address]]) -> None:
        self._looking_up.pop(key, None)
        if not done.cancelled():
            # Seen here, so a failure whose every waiter gave up first (their connect
            # timeouts) is not logged as "exception was never retrieved"; the waiters that
            # are left get it from the future as before.
            done.exception()

    async def _resolve(self, host: str, port: int) -> list[Address]:
        addresses = list(await self.resolve(host, port))
        if not addresses:  # getaddrinfo promises at least one, but an empty list must not be cached
            raise socket.gaierror(socket.EAI_NONAME, "no addresses")
        self._known[(host, port)] = (self.clock() + self.ttl, addresses)
        return addresses

    def demote(self, host: str, port: int, address: Address) -> None:
        """`address` failed to connect (or timed out): try the host's others first from now
        on, so one dead address of several does not fail every connect until it expires."""
        known = self._known.get((host, port))
        if known is not None and address in known[1]:
            known[1].remove(address)
            known[1].append(address)
