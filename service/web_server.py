"""gunicorn serving the app from inside `storypush web`, so the Procfile and the CLI are one path."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from .settings import Settings


class _StorypushGunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict[str, object]):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self):
        """In each gunicorn worker: JSON logs for this process, then the app (the factory
        itself leaves process-wide logging alone, so tests and embedders keep theirs)."""
        from . import create_app
        from .logs import configure_logging

        configure_logging("web")
        return create_app(self.settings)


def run_gunicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    _StorypushGunicorn(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "sync",
            # Behind a proxy the proxy keeps connections alive; sync workers answer and close.
            "timeout": 30,
            "graceful_timeout": 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
        },
    ).run()
