"""storypush as a user installs it: an sdist and a wheel built from the repo, the wheel installed
into a fresh virtualenv, every command run from an empty folder with no checkout nearby.

The rest of the suite runs against the editable install in the checkout, where a module or
file missing from the wheel would never show; this test is where it shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from service import STATIC_DIR
from tests.helpers import kill_embedded_redis
from tests.helpers.processes import clean_env, free_port, running_dev, wait_for

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("service", "workers", "benchmarks")
SUBJECT = "mailto:ops@publisher.example.org"


def _setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_directory_is_listed_for_the_wheel():
    """pyproject.toml lists packages by name (static/ is mapped into one), so a new
    subpackage missing from the list would be left out of every wheel."""
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for root in PACKAGE_ROOTS
        for init in (REPO / root).rglob("__init__.py")
    }
    listed = set(_setuptools_config()["packages"])
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert "service.store" in on_disk  # the package the first broken wheel lacked


def test_static_files_ship_as_package_data_and_the_checkout_serves_its_own():
    config = _setuptools_config()
    assert config["package-dir"] == {"service.static": "static"}
    assert {"sw.js", "prompt.js"} <= {p.name for p in (REPO / "static").iterdir()}
    assert STATIC_DIR == REPO / "static"  # the editable install uses the repository's static/


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run a command to completion; its stdout, or a failure showing everything it said."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the checkout with only the wheel (built from the sdist) installed."""
    root = tmp_path_factory.mktemp("wheel")
    source, dist = root / "source", root / "dist"
    # The files of a fresh clone of this tree: no egg-info or build/ left by earlier builds,
    # whose file lists setuptools would reuse (and so hide a file missing from the config).
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO, os.environ.copy())
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # `build` makes the sdist, then the wheel from the unpacked sdist: both have to be complete.
    _run([sys.executable, "-P", "-m", "build", "--outdir", str(dist), str(source)], root, os.environ.copy(), 300)
    (wheel,) = dist.glob("storypush-*.whl")
    assert len(list(dist.glob("storypush-*.tar.gz"))) == 1
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], root, os.environ.copy())
    _run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        root,
        os.environ.copy(),
        600,
    )
    return venv


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    yield folder
    kill_embedded_redis(folder / "var")  # `web` and `worker` leave theirs running for each other


def _user_env(venv: Path, **overrides: str) -> dict[str, str]:
    """A shell with the virtualenv activated and nothing pointing into the checkout."""
    env = clean_env(**overrides)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"):
        env.pop(name, None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_the_wheel_runs_every_command_from_an_empty_folder(installed: Path, empty_dir: Path):
    storypush = [str(installed / "bin" / "storypush")]
    env = _user_env(installed)

    where = _run([str(installed / "bin" / "python"), "-c", "import service; print(service.__file__)"], empty_dir, env)
    assert Path(where.strip()).is_relative_to(installed) and not Path(where.strip()).is_relative_to(REPO)

    # vapid: the key goes into ./var, the default data dir.
    _run([*storypush, "vapid", "init"], empty_dir, env)
    public_key = _run([*storypush, "vapid", "show"], empty_dir, env).strip()
    assert (empty_dir / "var" / "vapid_private.pem").is_file() and len(public_key) == 87

    # dev: embedded Redis, gunicorn and a worker; the pages and files come from the wheel.
    with running_dev(storypush, empty_dir / "var", env, empty_dir) as dev:
        token = dev.wait_for_line(r"admin token").split()[-1]
        dev.wait_for_line(r"Ctrl-C stops everything")
        assert dev.wait_healthy() == {"redis": "ok", "workers": 1}
        bearer = {"Authorization": f"Bearer {token}"}

        def get(path: str, **options) -> requests.Response:
            return requests.get(dev.base + path, timeout=10, **options)

        sw, prompt = get("/sw.js"), get("/static/prompt.js")
        assert (sw.status_code, prompt.status_code) == (200, 200)
        assert sw.content == (REPO / "static" / "sw.js").read_bytes()
        assert prompt.content == (REPO / "static" / "prompt.js").read_bytes()
        demo = get("/demo")
        assert demo.status_code == 200 and "/static/prompt.js" in demo.text
        admin = get("/admin", headers=bearer, allow_redirects=False)
        assert admin.status_code == 200 and 'id="campaigns"' in admin.text
        assert get("/admin/assets/dashboard.js", headers=bearer).status_code == 200
        assert get("/healthz").json() == {"redis": "ok", "workers": 1}
        assert get("/api/v1/vapid-public-key").json() == {"publicKey": public_key}

        # publish and campaigns, as separate processes joining dev's Redis; dev's worker runs it.
        published = _run(
            [
                *storypush,
                "publish",
                "--id",
                "wheel-story",
                "--title",
                "From the wheel",
                "--url",
                "https://publisher.example/w",
                "--topic",
                "animals",
            ],
            empty_dir,
            env,
        )
        campaign_id = published.split()[1]
        assert published == f"campaign {campaign_id} created: queued\n"
        done = re.compile(rf"^{campaign_id}\s+done\s", re.MULTILINE)
        wait_for(lambda: bool(done.search(_run([*storypush, "campaigns"], empty_dir, env))), 30, "the campaign done")
        dev.stop_and_check_all_gone()

    # web and worker, the Procfile's processes, on their own.
    production = _user_env(installed, STORYPUSH_VAPID_SUBJECT=SUBJECT)
    port = free_port()
    web = subprocess.Popen(
        [*storypush, "web", "--port", str(port), "--workers", "1"],
        cwd=empty_dir,
        env=production,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, "storypush web to answer")
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=15)
    _run([*storypush, "worker", "--burst"], empty_dir, production)

    # bench: the simulator and the benchmark are part of the installed code.
    out = _run(
        [
            *storypush,
            "bench",
            "--subscribers",
            "300",
            "--latency-ms",
            "5",
            "--latency-spread",
            "0.5",
            "--sample",
            "5",
            "--json",
        ],
        empty_dir,
        env,
        300,
    )
    report = json.loads(out[out.index("\n{") :])
    assert report["latency_spread"] == 0.5 and "latency spread σ=0.5 (log-normal)" in out
    pushes = {figure["sender"]: figure["pushes"] for figure in report["figures"]}
    assert pushes == {
        "storypush": 300,
        "storypush, next campaign": 300,
        "pywebpush send_async (200)": 300,
        "pywebpush send_async (1000)": 300,
        "plain webpush() loop": 5,
    }
    assert set(report["ratios"]["5"]) == {
        "core",
        "best_send_async",
        "vs_send_async",
        "vs_loop",
        "cpu_vs_floor",
        "next_campaign",
    }
    assert set(report["ratios"]["5"]["next_campaign"]) == {"core", "vs_send_async", "cpu_vs_floor"}
    assert set(report["goals"]["5"]) == {"core", "vs_send_async", "vs_loop", "cpu_vs_floor"}
    storypush = next(figure for figure in report["figures"] if figure["sender"] == "storypush")
    assert 0 < storypush["core"] <= 1.05  # the worker's CPU share while it sent
    assert "ramp" in storypush and "core_after_ramp" in storypush  # None when too short to tell
    assert set(report["crypto"]) == {"5"} and report["crypto"]["5"]["encrypt_s"] > 0  # the floor beside each run


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
