"""The comparison clients of `benchmarks.fanout`, each run in its own pinned process.

    python -m benchmarks.fanout_clients INPUT.json      (prints one JSON object)

INPUT names a `mode` and what that mode needs:

- `send_async`: pywebpush's `WebPusher.send_async` on one shared `aiohttp.ClientSession`
  (`limit=in_flight`), `in_flight` requests at once through an `asyncio.Semaphore`, and
  the VAPID `Authorization` header signed once for the origin, as a careful pywebpush
  user would write it. uvloop is used when installed (storypush's worker uses it too).
- `loop`: the README way, `pywebpush.webpush()` once per subscriber: a VAPID signature
  and a new HTTPS connection per call (`REQUESTS_CA_BUNDLE` must name the simulator CA).
- `crypto`: microseconds per RFC 8291 encryption with `workers.webpush.encrypt` and with
  `pywebpush.WebPusher.encode` (http_ece), the floor any sender pays per push.

Why a separate process: the parent pins it to one core (`taskset`) so each client gets
exactly the core storypush's worker gets, and its CPU time is its own
(`time.process_time`, all threads, measured around the sending only, so interpreter
start-up and loading the subscriber list are not counted).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import time
from collections import Counter
from typing import Any

TTL = 14400


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _vapid_header(key_path: str, origin: str, subject: str) -> dict[str, str]:
    """`Authorization: vapid t=…, k=…` signed once for `origin` (what a careful user caches)."""
    from py_vapid import Vapid02

    vapid = Vapid02.from_file(key_path)
    claims = {"aud": origin, "exp": int(time.time()) + 12 * 3600, "sub": subject}
    return dict(vapid.sign(claims))


async def _send_async(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp
    from pywebpush import WebPusher

    subscriptions: list[dict[str, Any]] = spec["subscriptions"]
    payload = _b64d(spec["payload"])
    in_flight = int(spec["in_flight"])
    context = ssl.create_default_context(cafile=spec["ca_file"])
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    began_cpu, began = time.process_time(), time.perf_counter()
    headers = {**_vapid_header(spec["vapid_key_path"], spec["origin"], spec["subject"]), "Urgency": "normal"}
    slots = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=in_flight, ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def push(subscription: dict[str, Any]) -> None:
            async with slots:
                try:
                    response = await WebPusher(subscription, aiohttp_session=session).send_async(
                        data=payload, headers=headers, ttl=TTL, content_encoding="aes128gcm"
                    )
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    return
                statuses[response.status] += 1  # type: ignore[union-attr]

        await asyncio.gather(*(push(s) for s in subscriptions))
    wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    return {"pushes": len(subscriptions), "wall": wall, "cpu": cpu, "statuses": statuses, "errors": errors}


def _loop(spec: dict[str, Any]) -> dict[str, Any]:
    import requests
    from pywebpush import WebPushException, webpush

    subscriptions: list[dict[str, Any]] = spec["subscriptions"]
    payload = _b64d(spec["payload"])
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    began_cpu, began = time.process_time(), time.perf_counter()
    for subscription in subscriptions:
        try:
            response = webpush(
                subscription,
                data=payload,  # type: ignore[arg-type]  # bytes are sent as-is
                vapid_private_key=spec["vapid_key_path"],
                vapid_claims={"sub": spec["subject"]},  # fresh: webpush() writes aud/exp into it
                ttl=TTL,
                headers={"Urgency": "normal"},
            )
            statuses[response.status_code] += 1  # type: ignore[union-attr]
        except WebPushException as exc:
            statuses[exc.response.status_code if exc.response is not None else 0] += 1
        except requests.RequestException as exc:
            errors[type(exc).__name__] += 1
    wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    return {"pushes": len(subscriptions), "wall": wall, "cpu": cpu, "statuses": statuses, "errors": errors}


def _crypto(spec: dict[str, Any]) -> dict[str, Any]:
    from pywebpush import WebPusher

    from workers.webpush import encrypt

    subscriptions: list[dict[str, Any]] = spec["subscriptions"]
    payload = _b64d(spec["payload"])
    iterations = int(spec["iterations"])
    keys = [(_b64d(s["keys"]["p256dh"]), _b64d(s["keys"]["auth"])) for s in subscriptions]
    pushers = [WebPusher(s) for s in subscriptions]
    picks = [keys[i % len(keys)] for i in range(iterations)]
    encrypt(payload, *picks[0])  # warm up (imports, OpenSSL tables)
    began = time.process_time()
    for p256dh, auth in picks:
        encrypt(payload, p256dh, auth)
    ours = (time.process_time() - began) / iterations
    picked = [pushers[i % len(pushers)] for i in range(iterations)]
    picked[0].encode(payload, "aes128gcm")
    began = time.process_time()
    for pusher in picked:
        pusher.encode(payload, "aes128gcm")
    theirs = (time.process_time() - began) / iterations
    return {"iterations": iterations, "encrypt_s": ours, "pywebpush_encode_s": theirs}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one mode and return its figures (statuses keyed by HTTP status as text)."""
    mode = spec["mode"]
    if mode == "send_async":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a storypush dependency
            result = asyncio.run(_send_async(spec))
        else:
            result = uvloop.run(_send_async(spec))
    elif mode == "loop":
        result = _loop(spec)
    elif mode == "crypto":
        result = _crypto(spec)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    for name in ("statuses", "errors"):
        if name in result:
            result[name] = {str(k): v for k, v in result[name].items()}
    return result


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
