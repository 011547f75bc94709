"""The `storypush` command: run the service, manage the VAPID key, operate campaigns.

Dependencies point one way, `workers` → `service`, so this module never imports the worker
or benchmark code: `storypush worker` and `storypush bench` call the one entry point each
names in `WORKER_ENTRY_POINT` / `BENCH_ENTRY_POINT`, looked up by name when the command runs
(as RQ looks up a job's function).
"""

from __future__ import annotations

import os
import pkgutil
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from .errors import SettingsError
from .settings import DEV_VAPID_SUBJECT, Settings, load_settings
from .store.campaign_store import COUNTERS, FINAL_STATES
from .vocabulary import DEFAULT_TTL, DEFAULT_URGENCY, Urgency

# `run_workers(settings, processes=..., burst=...)`: the Procfile's worker process.
WORKER_ENTRY_POINT = "workers.runner:run_workers"
# `main(argv) -> exit status`: the fan-out benchmark.
BENCH_ENTRY_POINT = "benchmarks.fanout:main"


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _production_settings() -> Settings:
    """Settings for `web`/`worker`: one line naming the variable if unusable."""
    settings = _settings()
    try:
        settings.require_production()
        from .vapid import require_key

        require_key(settings)
    except SettingsError as exc:
        click.echo(f"storypush: {exc}", err=True)
        sys.exit(2)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """storypush: web-push reminders for publishers.

    Configuration comes from the environment (see README): REDIS_URL,
    STORYPUSH_VAPID_SUBJECT, STORYPUSH_WEBHOOK_SECRET, STORYPUSH_ADMIN_TOKEN, ...
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", "web_workers", default=None, type=int, help="gunicorn worker processes (default 2 × CPUs).")
def web(host: str, port: int, web_workers: int | None) -> None:
    """Serve the Flask app with gunicorn (the Procfile's web process)."""
    settings = _production_settings()
    from .store import resolve_redis_urls
    from .web_server import run_gunicorn

    # Start (or join) the embedded Redis here, in gunicorn's master, so its
    # workers share one server and a worker restart never restarts Redis.
    resolve_redis_urls(settings)
    run_gunicorn(settings, host, port, web_workers or 2 * (os.cpu_count() or 1))


@main.command()
@click.option("--processes", default=1, show_default=True, type=int, help="RQ worker processes to run.")
@click.option("--burst", is_flag=True, help="Quit when the queues are empty (for scripts and tests).")
def worker(processes: int, burst: bool) -> None:
    """Run RQ worker(s) with the scheduler (the Procfile's worker process)."""
    settings = _production_settings()
    run_workers = pkgutil.resolve_name(WORKER_ENTRY_POINT)
    run_workers(settings, processes=processes, burst=burst)


@main.group()
def vapid() -> None:
    """Create or show the deployment's VAPID key (one per deployment; keep it)."""


@vapid.command("init")
@click.option("--force", is_flag=True, help="Replace an existing key. Orphans every current subscriber!")
def vapid_init(force: bool) -> None:
    """Create the VAPID key in the data dir (once)."""
    settings = _settings()
    from .vapid import create_key

    if settings.vapid_private_key:
        raise click.ClickException("STORYPUSH_VAPID_PRIVATE_KEY is set; that key is used, nothing to create")
    try:
        key, path = create_key(settings, force=force)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc} exists; refusing to replace it without --force") from None
    click.echo(f"created {path} (mode 0600)")
    click.echo(f"public key: {key.public_key_b64}")


@vapid.command("show")
def vapid_show() -> None:
    """Print the applicationServerKey (base64url) browsers subscribe with."""
    settings = _settings()
    from .vapid import load_key

    try:
        key = load_key(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if key is None:
        raise click.ClickException("no VAPID key yet: run `storypush vapid init`")
    click.echo(key.public_key_b64)


@main.command()
@click.option("--id", "story_id", required=True, help="Story id (the campaign is idempotent per id).")
@click.option("--title", required=True)
@click.option("--url", required=True, help="The story URL the notification opens.")
@click.option("--body", default="", help="Notification text under the title.")
@click.option("--image", default=None, help="Large image URL.")
@click.option("--icon", default=None, help="Icon URL.")
@click.option("--topic", "topics", multiple=True, required=True, help="A topic id; repeat for several.")
@click.option("--ttl", default=DEFAULT_TTL, show_default=True, type=int, help="Seconds a push service keeps it.")
@click.option(
    "--urgency", default=DEFAULT_URGENCY.value, show_default=True, type=click.Choice([u.value for u in Urgency])
)
@click.option("--send-at", default=None, type=float, help="Unix time to send at (default: now).")
def publish(**options: object) -> None:
    """The same as a story.published webhook, for trying it by hand."""
    from pydantic import ValidationError

    from . import publishing
    from .state import AppState
    from .validation import StoryData

    settings = _settings()
    state = AppState(settings)
    data = {k: v for k, v in options.items() if v is not None}
    data["id"] = data.pop("story_id")
    data["topics"] = list(data["topics"])  # type: ignore[call-overload]
    try:
        story = StoryData.model_validate(data, context={"topics": state.store.topic_ids})
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    result = publishing.publish(state.store, state.queue, story.as_story(), story.send_at_timestamp())
    verb = "created" if result.created else "already exists"
    click.echo(f"campaign {result.campaign_id} {verb}: {result.status}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """The fan-out benchmark (see README): storypush vs pywebpush against a local push-service simulator."""
    bench_main = pkgutil.resolve_name(BENCH_ENTRY_POINT)
    sys.exit(bench_main(ctx.args))


@contextmanager
def _children(commands: list[list[str]], env: dict[str, str]) -> Iterator[list[subprocess.Popen]]:
    """Run `commands` each in its own process group; stop all of them on exit."""
    procs: list[subprocess.Popen] = []
    try:
        for command in commands:
            procs.append(subprocess.Popen(command, env=env, start_new_session=True))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "worker_processes", default=1, show_default=True, type=int, help="RQ worker processes.")
def dev(host: str, port: int, worker_processes: int) -> None:
    """Everything on one machine: Redis (embedded unless REDIS_URL), web and workers. Ctrl-C stops all."""
    env = dict(os.environ)
    if not env.get("STORYPUSH_VAPID_SUBJECT"):
        click.secho(f"warning: STORYPUSH_VAPID_SUBJECT unset; using {DEV_VAPID_SUBJECT}", fg="yellow", err=True)
        env["STORYPUSH_VAPID_SUBJECT"] = DEV_VAPID_SUBJECT
    env.setdefault("STORYPUSH_ADMIN_TOKEN", secrets.token_urlsafe(24))
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from .store import resolve_redis_urls
    from .vapid import load_or_create_key

    embedded = None
    if not settings.redis_url:
        from .embedded_redis import ensure_embedded_redis

        embedded = ensure_embedded_redis(settings.data_dir)
    resolve_redis_urls(settings)
    key = load_or_create_key(settings)
    # -P: the children import storypush as installed, never a `service/` folder in the cwd.
    exe = [sys.executable, "-P", "-m", "service.cli"]
    commands = [
        [*exe, "web", "--host", host, "--port", str(port), "--workers", "2"],
        [*exe, "worker", "--processes", str(worker_processes)],
    ]
    base = f"http://{host}:{port}"
    stop = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        with _children(commands, env) as procs:
            click.echo(
                f"storypush dev: redis {'embedded in ' + str(settings.data_dir) if embedded else 'at REDIS_URL'}"
            )
            click.echo(f"  API          {base}/api/v1/topics")
            click.echo(f"  demo page    {base}/demo")
            click.echo(f"  dashboard    {base}/admin")
            click.echo(f"  admin token  {env['STORYPUSH_ADMIN_TOKEN']}")
            # Never echo the webhook secret: the CMS gets it from wherever the operator keeps it.
            webhook_state = (
                "signed with STORYPUSH_WEBHOOK_SECRET"
                if env.get("STORYPUSH_WEBHOOK_SECRET")
                else ("refuses calls until STORYPUSH_WEBHOOK_SECRET is set; `storypush publish` needs none")
            )
            click.echo(f"  webhook      POST {base}/webhooks/cms  ({webhook_state})")
            click.echo("  feeds        storypush feeds add URL  (polled by the worker; no CMS integration needed)")
            click.echo(f"  VAPID key    {key.public_key_b64}")
            click.echo("Ctrl-C stops everything.")
            while not stop["now"]:
                if any(proc.poll() is not None for proc in procs):
                    click.secho("a child process exited; stopping", fg="red", err=True)
                    break
                time.sleep(0.2)
    finally:
        if embedded is not None:
            embedded.stop()
    click.echo("stopped")


# -- operating campaigns and subscribers (the store directly; no web process needed) --


def _store():
    from .state import AppState

    return AppState(_settings()).store


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def _progress(campaign: dict) -> int:
    """Subscribers finished with (sent, failed, expired or skipped)."""
    return campaign["sent"] + campaign["failed"] + campaign["expired"] + campaign["skipped"]


@main.command("campaigns")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500), help="How many, newest first.")
def campaigns_list(limit: int) -> None:
    """List campaigns newest first: state, progress and outcome counts."""
    rows = _store().campaigns.list(limit)
    if not rows:
        click.echo("no campaigns")
        return
    header = f"{'ID':<14} {'STATE':<10} {'DONE':>13} {'SENT':>8} {'FAILED':>7} {'EXPIRED':>7}  {'CREATED':<19}  STORY"
    click.echo(header)
    for c in rows:
        done = f"{_progress(c)}/{c['targeted']}"
        click.echo(
            f"{c['id']:<14} {c['state']:<10} {done:>13} {c['sent']:>8} {c['failed']:>7} {c['expired']:>7}"
            f"  {_when(c['created_at']):<19}  {c['story'].get('title', '')[:60]}"
        )


@main.group("campaign")
def campaign_group() -> None:
    """Inspect or cancel one campaign (ids from `storypush campaigns`)."""


def _get_campaign(campaign_id: str) -> dict:
    campaign = _store().campaigns.get(campaign_id)
    if campaign is None:
        raise click.ClickException(f"no campaign {campaign_id}")
    return campaign


def _show(campaign: dict) -> None:
    story = campaign["story"]
    click.echo(f"campaign {campaign['id']}: {campaign['state']}")
    click.echo(f"  story     {story.get('id')}  {story.get('title', '')}")
    click.echo(f"  topics    {', '.join(story.get('topics', []))}")
    for name in COUNTERS:
        click.echo(f"  {name:<9} {campaign[name]}")
    for name in ("created_at", "send_at", "started_at", "finished_at"):
        if campaign.get(name) or name != "send_at":
            click.echo(f"  {name.removesuffix('_at'):<9} {_when(campaign.get(name))}")
    for reason, count in sorted(campaign["errors"].items(), key=lambda item: -item[1]):
        click.echo(f"  error     {reason}: {count}")


@campaign_group.command("show")
@click.argument("campaign_id")
@click.option("--follow", is_flag=True, help="Show a progress bar until the campaign is done, cancelled or failed.")
@click.option("--interval", default=1.0, show_default=True, type=float, help="Seconds between polls with --follow.")
def campaign_show(campaign_id: str, follow: bool, interval: float) -> None:
    """Print a campaign's state, counters, timeline and errors by reason."""
    campaign = _get_campaign(campaign_id)
    if follow and campaign["state"] not in FINAL_STATES:
        store = _store()
        # The audience size is known once the campaign starts; until then the bar waits at 0.
        with click.progressbar(length=max(1, campaign["targeted"]), label=f"campaign {campaign_id}") as bar:
            shown = 0
            while True:
                campaign = store.campaigns.get(campaign_id) or campaign
                bar.length = max(1, campaign["targeted"])
                bar.update(_progress(campaign) - shown)
                shown = _progress(campaign)
                if campaign["state"] in FINAL_STATES:
                    break
                time.sleep(interval)
    _show(campaign)


@campaign_group.command("cancel")
@click.argument("campaign_id")
def campaign_cancel(campaign_id: str) -> None:
    """Cancel a campaign that is scheduled, queued or sending; batches not yet sent skip it."""
    store = _store()
    campaign = _get_campaign(campaign_id)
    if not store.campaigns.cancel(campaign_id):  # only moves a campaign that is not final yet
        raise click.ClickException(f"campaign {campaign_id} is already {store.campaigns.state(campaign_id)}")
    click.echo(f"campaign {campaign_id} cancelled ({_progress(campaign)} of {campaign['targeted']} already done)")


@main.group("feeds")
def feeds_group() -> None:
    """Poll publishers' RSS / Atom / JSON feeds for new stories (no CMS webhook needed).

    A feed's first poll records what is there and sends nothing; after that each new entry
    goes out once, exactly as a story.published webhook would.
    """


@feeds_group.command("add")
@click.argument("url")
@click.option("--topic", "topics", multiple=True, help="Topic for entries none of whose categories match; repeat.")
@click.option(
    "--category-map",
    default=None,
    help='Feed categories to topics, e.g. "Animals=animals,TV and Film=tv-and-film".',
)
@click.option("--every", default=120, show_default=True, type=int, help="Seconds between polls (10 to 86400).")
def feeds_add(url: str, topics: tuple[str, ...], category_map: str | None, every: int) -> None:
    """Add a feed and print its id; the workers poll it from now on."""
    from pydantic import ValidationError

    from . import feeds
    from .errors import ApiError
    from .state import AppState

    state = AppState(_settings())
    data = {"url": url, "topics": list(topics), "category_map": category_map, "every": every}
    try:
        spec = feeds.FeedSpec.model_validate(data, context=feeds.spec_context(state.settings, state.store))
        feed = feeds.add_feed(state, spec)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"]))
        raise click.ClickException(f"{field}: {first['msg'].removeprefix('Value error, ')}") from None
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(feed.id_)


@feeds_group.command("list")
def feeds_list() -> None:
    """Every feed: poll interval, health, entries seen, stories sent, URL."""
    rows = _store().feeds.list()
    if not rows:
        click.echo("no feeds")
        return
    click.echo(f"{'ID':<14} {'EVERY':>6} {'FAILS':>5} {'SEEN':>6} {'SENT':>5}  {'LAST SUCCESS':<19}  URL")
    for feed in rows:
        click.echo(
            f"{feed.id_:<14} {feed.every:>5}s {feed.failures:>5} {feed.entries_seen:>6} {feed.stories:>5}"
            f"  {_when(feed.last_success_at):<19}  {feed.url}"
        )
        mapped = ", ".join(f"{name}={topic}" for name, topic in feed.category_map.items())
        click.echo(f"{'':<14} topics: {', '.join(feed.topics) or '-'}; categories: {mapped or 'by name'}")
        if feed.failures and feed.last_error:
            click.echo(f"{'':<14} failing: {feed.last_error}")


@feeds_group.command("remove")
@click.argument("feed_id")
def feeds_remove(feed_id: str) -> None:
    """Stop polling a feed and forget it (campaigns it started stay)."""
    from . import feeds
    from .state import AppState

    if not feeds.remove_feed(AppState(_settings()), feed_id):
        raise click.ClickException(f"no feed {feed_id}")
    click.echo(f"removed feed {feed_id}")


@main.group("subscribers")
def subscribers_group() -> None:
    """Subscriber figures."""


@subscribers_group.command("stats")
def subscribers_stats() -> None:
    """Total subscribers, followers per topic, and the soft-prompt funnel."""
    store = _store()
    click.echo(f"subscribers  {store.subscriptions.count()}")
    for topic, count in store.subscriptions.count_by_topic().items():
        click.echo(f"  {topic:<20} {count}")
    funnel = store.prompt_funnel()
    click.echo("prompt funnel  " + "  ".join(f"{kind} {count}" for kind, count in funnel.items()))


if __name__ == "__main__":
    main()
