"""A minimal stand-in for Mozilla's autopush, so a real Firefox can receive real pushes offline.

See `server.py`: the WebSocket protocol Firefox's `PushServiceWebSocket.sys.mjs` speaks
(`dom.push.serverURL`) plus the RFC 8030 HTTPS endpoint application servers POST to.
"""

from tests.autopush.server import AutopushServer

__all__ = ["AutopushServer"]
