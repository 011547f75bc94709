"""Real processes: `storypush web` (gunicorn) and `storypush worker` (RQ) as subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.helpers.processes import Stack, process_env, running_stack


@pytest.fixture
def stack_env(fanout_settings: Settings, vapid_key, sim) -> dict[str, str]:
    return process_env(
        fanout_settings,
        ",".join(fanout_settings.push_hosts),
        sim.ca_file,
        STORYPUSH_BATCH_SIZE="20",
        STORYPUSH_MAX_ATTEMPTS="4",
    )


@pytest.fixture
def stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    with running_stack(stack_env, tmp_path) as stack:
        yield stack
