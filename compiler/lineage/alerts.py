"""Alerts: who is told, through which route, when a production pipeline needs a person.

Routes live in the lineage database (`alert_routes`), one per notebook or per schedule:

    email    an address; the SMTP server is $KILN_SMTP_URL, an apprise mailto:// URL such as
             mailtos://kiln:${KILN_SMTP_PASSWORD}@smtp.example.com:587?from=kiln@example.com
    webhook  an http(s) URL that takes Slack-compatible JSON ({"text": ...}); sent with
             apprise's json:// plugin, its payload renamed to Slack's one field
    apprise  any apprise URL (slack://, msteams://, pagerduty://, json://, ...)

A target may hold `${NAME}` placeholders (a password, a whole webhook URL with its token):
they are expanded from the environment at send time only, so secrets are never written to the
notebook, the lineage database or a log; a literal password in a URL is refused.

Events: failed (with the failing task, cell and line), check and drift (raised by the metrics
checks through `raise_alert`), late (a due time with no run within the grace period, also
after the scheduler was down: `late_alerts`, from `Scheduler.tick(now)`), slow (more than N x
the median duration of the notebook's last successful runs), recovered (the first success
after failures). Each alert names the owner and links the output notebook.

Delivery (apprise, well kept and covering ~100 services) writes one `alert_deliveries` row per
(route, event, subject), so re-evaluating a run never sends twice; a route that alerted for
the same event and scope within the repeat window (default an hour) is suppressed (recorded,
not sent). A failing route is logged and recorded; it never raises into the run.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from compiler.lineage.schema import alert_deliveries, alert_routes, runs, settings, task_runs
from compiler.lineage.store import LineageStore
from compiler.model.clock import utcnow

log = logging.getLogger(__name__)

EVENTS = ("failed", "check", "drift", "late", "slow", "recovered")
DEFAULT_EVENTS = ("failed", "check", "drift", "late", "recovered")
KINDS = ("email", "webhook", "apprise")
SMTP_ENV = "KILN_SMTP_URL"
LINK_BASE_ENV = "KILN_BASE_URL"  # a Jupyter server's URL: links open the output in JupyterLab
LINK_ROOT_ENV = "KILN_ROOT_DIR"  # the folder that server serves (default: the current folder)
DEFAULT_REPEAT_S = 3600.0
DEFAULT_SLOW_FACTOR = 3.0
SLOW_HISTORY = 20  # successful runs the median is taken over
SLOW_MIN_HISTORY = 3
DEFAULT_GRACE_S = 300
# Connect and read timeouts (seconds) for HTTP routes: an unreachable receiver costs the run's
# end a few seconds at most, never a hang.
HTTP_TIMEOUTS = "cto=3&rto=5"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class AlertError(ValueError):
    """Bad alert input, or a route that cannot be sent: the message says what to fix."""


@dataclass(frozen=True)
class Route:
    id: int
    notebook: str | None
    schedule: str | None
    kind: str
    target: str
    events: tuple[str, ...]
    created_at: str
    created_by: str | None

    @classmethod
    def from_row(cls, row: Any) -> Route:
        m = row._mapping
        created = m["created_at"]
        return cls(
            int(m["id"]),
            m["notebook_path"],
            m["schedule_name"],
            m["kind"],
            m["target"],
            tuple(m["events"] or ()),
            created.isoformat() if created else "",
            m["created_by"],
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = list(self.events)
        return data

    def describe(self) -> str:
        where = f"schedule {self.schedule}" if self.schedule else Path(self.notebook or "").name
        return f"route {self.id} ({self.kind} {self.target}, {where})"


@dataclass
class Alert:
    event: str
    subject: str  # what it is about: a run id, schedule@due
    scope: str  # which thing repeats are counted for: a notebook path or a schedule name
    title: str
    owner: str | None = None
    team: str | None = None
    link: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> str:
        lines = [self.title]
        owner = self.owner or "nobody (set one: kiln owner set NOTEBOOK NAME)"
        lines.append(f"Owner: {owner}" + (f" (team {self.team})" if self.team else ""))
        for key, value in self.details.items():
            if value not in (None, ""):
                lines.append(f"{key}: {value}")
        if self.link:
            lines.append(f"Output notebook: {self.link}")
        return "\n".join(lines)


# -- routes ---------------------------------------------------------------------------------


def parse_events(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_EVENTS
    items = text.split(",") if isinstance(text, str) else list(text)
    events = tuple(dict.fromkeys(e.strip().lower() for e in items if e.strip()))
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise AlertError(
            f"unknown alert event(s) {', '.join(unknown)}: choose from {', '.join(EVENTS)}"
        )
    return events


def check_target(kind: str, target: str) -> str:
    """The target as stored: validated, secrets only as ${NAME} placeholders."""
    target = (target or "").strip()
    if kind not in KINDS:
        raise AlertError(f"route kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not target:
        raise AlertError(f"a {kind} route needs a target")
    if kind == "email":
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", target):
            raise AlertError(f"{target!r} is not an email address")
        return target
    if _PLACEHOLDER.fullmatch(target):
        return target  # the whole URL (with its token) comes from the environment
    parts = urlsplit(target)
    if not parts.scheme or "://" not in target:
        raise AlertError(
            f"{target!r} is not a URL: write e.g. https://hooks.slack.com/services/... or "
            "${SLACK_WEBHOOK_URL} to read it from the environment"
        )
    if kind == "webhook" and parts.scheme not in ("http", "https"):
        raise AlertError(f"a webhook is an http(s) URL; use --apprise for {parts.scheme}://")
    if parts.password and not _PLACEHOLDER.fullmatch(parts.password):
        raise AlertError(
            "the URL holds a password: put it in an environment variable and write "
            "${NAME} in its place (e.g. mailtos://kiln:${KILN_SMTP_PASSWORD}@smtp.example.com), "
            "so it is never stored"
        )
    if kind == "apprise":
        import apprise

        probe = apprise.Apprise()
        if not probe.add(_PLACEHOLDER.sub("placeholder", target)):
            raise AlertError(f"apprise does not understand {target!r} (see its list of services)")
    return target


def add_route(
    store: LineageStore,
    *,
    kind: str,
    target: str,
    notebook: str | Path | None = None,
    schedule: str | None = None,
    events: str | Sequence[str] | None = None,
    user: str | None = None,
) -> Route:
    if (notebook is None) == (schedule is None):
        raise AlertError("a route belongs to one notebook or one schedule")
    row = {
        "notebook_path": str(Path(notebook).resolve()) if notebook is not None else None,
        "schedule_name": schedule,
        "kind": kind,
        "target": check_target(kind, target),
        "events": list(parse_events(events)),
        "created_at": utcnow(),
        "created_by": user or _user(),
    }
    if notebook is not None and not Path(notebook).is_file():
        raise AlertError(f"{notebook}: no such notebook")

    def work(c: Any) -> int:
        return int(c.execute(insert(alert_routes).values(**row)).inserted_primary_key[0])

    route_id = store.write(work)
    return get_route(store, route_id)


def get_route(store: LineageStore, route_id: int) -> Route:
    with store.reading() as c:
        row = c.execute(select(alert_routes).where(alert_routes.c.id == route_id)).first()
    if row is None:
        raise AlertError(f"no alert route {route_id} (kiln alert list shows them)")
    return Route.from_row(row)


def list_routes(
    store: LineageStore, notebook: str | Path | None = None, schedule: str | None = None
) -> list[Route]:
    query = select(alert_routes).order_by(alert_routes.c.id)
    if notebook is not None:
        query = query.where(alert_routes.c.notebook_path == str(Path(notebook).resolve()))
    if schedule is not None:
        query = query.where(alert_routes.c.schedule_name == schedule)
    with store.reading() as c:
        return [Route.from_row(r) for r in c.execute(query)]


def routes_for(
    store: LineageStore, notebooks: Iterable[str | Path], schedules: Iterable[str] = ()
) -> list[Route]:
    paths = [str(Path(n).resolve()) for n in notebooks if n]
    names = [s for s in schedules if s]
    if not paths and not names:
        return []
    query = (
        select(alert_routes)
        .where(
            or_(alert_routes.c.notebook_path.in_(paths), alert_routes.c.schedule_name.in_(names))
        )
        .order_by(alert_routes.c.id)
    )
    with store.reading() as c:
        return [Route.from_row(r) for r in c.execute(query)]


def remove_route(store: LineageStore, route_id: int) -> Route:
    route = get_route(store, route_id)
    store.write(lambda c: c.execute(delete(alert_routes).where(alert_routes.c.id == route_id)))
    return route


def has_route(store: LineageStore, notebook: str | Path) -> bool:
    return bool(list_routes(store, notebook=notebook))


# -- sending --------------------------------------------------------------------------------


def expand_secrets(text: str, environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """(text with ${NAME} replaced from the environment, the secret values used)."""
    env = os.environ if environ is None else environ
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise AlertError(f"the environment variable {name} is not set (the route reads it)")
        used.append(env[name])
        return env[name]

    return _PLACEHOLDER.sub(replace, text), used


def apprise_url(route: Route, environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """The URL apprise sends to, secrets expanded, and those secrets (to redact from errors)."""
    env = os.environ if environ is None else environ
    if route.kind == "email":
        smtp = env.get(SMTP_ENV)
        if not smtp:
            raise AlertError(
                f"email routes need ${SMTP_ENV}: an apprise mailto URL of your SMTP server, e.g. "
                "mailtos://kiln:${KILN_SMTP_PASSWORD}@smtp.example.com:587?from=kiln@example.com"
            )
        url, secrets = expand_secrets(smtp, env)
        joiner = "&" if "?" in url else "?"
        return f"{url}{joiner}to={quote(route.target, safe='@')}", secrets
    url, secrets = expand_secrets(route.target, env)
    if route.kind == "webhook":
        parts = urlsplit(url)
        scheme = "jsons" if parts.scheme == "https" else "json"
        rest = url.split("://", 1)[1]
        joiner = "&" if parts.query else "?"
        # Slack's incoming-webhook JSON is {"text": ...}: rename apprise's message, drop the rest.
        mapping = ":message=text&:title=&:version=&:type=&:attachments="
        url = f"{scheme}://{rest}{joiner}{mapping}&{HTTP_TIMEOUTS}"
    return url, secrets


def send(route: Route, alert: Alert) -> str | None:
    """Send one alert through one route; None when it went, else why not (secrets redacted)."""
    import apprise  # 0.6-1.0 s to import on this machine: only when something is sent

    try:
        url, secrets = apprise_url(route)
    except AlertError as exc:
        return str(exc)
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return _redact(f"apprise cannot use the route's URL ({route.kind})", secrets)
    notify_type = (
        apprise.NotifyType.SUCCESS
        if alert.event == "recovered"
        else (apprise.NotifyType.FAILURE if alert.event == "failed" else apprise.NotifyType.WARNING)
    )
    body = alert.body()  # its first line is the title: Slack's JSON shows one text field
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        ok = notifier.notify(body=body, title=alert.title, notify_type=notify_type)
    if ok:
        return None
    reason = captured.getvalue().strip() or "the route did not accept the message"
    return _redact(reason.splitlines()[-1], secrets)


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def deliver(
    store: LineageStore, alert: Alert, routes: Iterable[Route], now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Send `alert` to every route that listens for its event, at most once per route and
    subject, suppressed within the repeat window. Returns one record per route considered."""
    now = now or utcnow()
    repeat = dt.timedelta(seconds=float(get_setting(store, "alert_repeat_s", DEFAULT_REPEAT_S)))
    results = []
    for route in routes:
        if alert.event not in route.events:
            continue
        status = _claim_delivery(store, route, alert, now, repeat)
        if status is None:
            continue  # already delivered (or being delivered) for this subject
        error = None
        if status == "sending":
            error = send(route, alert)
            status = "sent" if error is None else "failed"
            if error is not None:
                log.warning(
                    "kiln: alert %s through %s failed: %s", alert.event, route.describe(), error
                )
            _close_delivery(store, route, alert, status, error)
        results.append({"route": route.id, "event": alert.event, "status": status, "error": error})
    return results


def _claim_delivery(
    store: LineageStore, route: Route, alert: Alert, now: dt.datetime, repeat: dt.timedelta
) -> str | None:
    def work(c: Any) -> str:
        recent = c.execute(
            select(alert_deliveries.c.id).where(
                and_(
                    alert_deliveries.c.route_id == route.id,
                    alert_deliveries.c.event == alert.event,
                    alert_deliveries.c.scope == alert.scope,
                    alert_deliveries.c.status.in_(("sent", "sending")),
                    alert_deliveries.c.sent_at > now - repeat,
                )
            )
        ).first()
        status = "suppressed" if recent is not None and alert.event != "recovered" else "sending"
        c.execute(
            insert(alert_deliveries).values(
                route_id=route.id,
                event=alert.event,
                subject=alert.subject[:300],
                scope=alert.scope[:1100],
                status=status,
                sent_at=now,
            )
        )
        return status

    try:
        return store.write(work)
    except IntegrityError:
        return None


def _close_delivery(
    store: LineageStore, route: Route, alert: Alert, status: str, error: str | None
) -> None:
    store.write(
        lambda c: c.execute(
            update(alert_deliveries)
            .where(
                alert_deliveries.c.route_id == route.id,
                alert_deliveries.c.event == alert.event,
                alert_deliveries.c.subject == alert.subject[:300],
            )
            .values(status=status, error=error)
        )
    )


def deliveries(store: LineageStore, limit: int = 50) -> list[dict[str, Any]]:
    query = select(alert_deliveries).order_by(alert_deliveries.c.id.desc()).limit(limit)
    with store.reading() as c:
        rows = [dict(r._mapping) for r in c.execute(query)]
    for row in rows:
        row["sent_at"] = row["sent_at"].isoformat() if row["sent_at"] else None
    return rows


def test_alert(
    store: LineageStore, notebook: str | Path, owner: str | None = None, team: str | None = None
) -> list[dict[str, Any]]:
    """Send a test message to every route of the notebook (never rate-limited or recorded)."""
    alert = Alert(
        event="test",
        subject="test",
        scope=str(Path(notebook).resolve()),
        title=f"[kiln] test alert for {Path(notebook).name}",
        owner=owner,
        team=team,
        details={"Why": "kiln alert test: this route works"},
    )
    out = []
    for route in list_routes(store, notebook=notebook):
        error = send(route, alert)
        out.append({"route": route.id, "kind": route.kind, "target": route.target, "error": error})
    return out


# -- settings -------------------------------------------------------------------------------


def get_setting(store: LineageStore, key: str, default: Any = None) -> Any:
    with store.reading() as c:
        value = c.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    return default if value is None else value


def set_setting(store: LineageStore, key: str, value: Any) -> None:
    def work(c: Any) -> None:
        c.execute(delete(settings).where(settings.c.key == key))
        c.execute(insert(settings).values(key=key, value=value))

    store.write(work)


# -- events ---------------------------------------------------------------------------------


def output_link(path: str | None) -> str | None:
    """Where a person opens the output notebook: JupyterLab when $KILN_BASE_URL is set."""
    if not path:
        return None
    base = os.environ.get(LINK_BASE_ENV)
    resolved = Path(path).resolve()
    if base:
        root = Path(os.environ.get(LINK_ROOT_ENV) or Path.cwd()).resolve()
        try:
            relative = resolved.relative_to(root).as_posix()
            return f"{base.rstrip('/')}/lab/tree/{quote(relative)}"
        except ValueError:
            pass
    return resolved.as_uri()


def run_alerts(store: LineageStore, run_id: str, scope: str | None = None) -> list[Alert]:
    """failed / recovered / slow for one ended run, judged against the notebook's history."""
    with store.reading() as c:
        run = c.execute(select(runs).where(runs.c.id == run_id)).first()
        if run is None:
            return []
        run_m = run._mapping
        failing = c.execute(
            select(task_runs)
            .where(task_runs.c.run_id == run_id, task_runs.c.status == "failed")
            .order_by(task_runs.c.id)
        ).all()
        history = c.execute(
            select(runs.c.status, runs.c.started_at, runs.c.ended_at)
            .where(
                runs.c.notebook_path == run_m["notebook_path"],
                runs.c.id != run_id,
                runs.c.started_at < run_m["started_at"],
                runs.c.status.in_(("succeeded", "failed")),
            )
            .order_by(runs.c.started_at.desc())
            .limit(SLOW_HISTORY * 3)
        ).all()
    name = Path(run_m["notebook_path"]).name
    scope = scope or run_m["notebook_path"]
    common = {
        "subject": run_id,
        "scope": scope,
        "owner": run_m["owner"],
        "team": run_m["team"],
        "link": output_link(run_m["output_notebook"]),
    }
    status = run_m["status"]
    alerts: list[Alert] = []
    if status == "failed":
        details: dict[str, Any] = {"Run": run_id}
        if failing:
            task = failing[0]._mapping
            cell = task["error_cell_index"]
            where = "setup code" if cell is None else f"cell {cell}"
            if task["error_cell_id"]:
                where += f" (id {task['error_cell_id']})"
            if task["error_line"] is not None:
                where += f", line {task['error_line']}"
            details.update({"Task": task["task"], "Cell": where, "Error": task["error_message"]})
            if len(failing) > 1:
                details["Also failed"] = ", ".join(r._mapping["task"] for r in failing[1:])
        elif run_m["error"]:
            details["Error"] = run_m["error"]
        task_name = details.get("Task")
        title = f"[kiln] {name} failed" + (f" in task {task_name}" if task_name else "")
        alerts.append(Alert(event="failed", title=title, details=details, **common))
    elif status == "succeeded":
        if history and history[0].status == "failed":
            failures = 0
            for row in history:
                if row.status != "failed":
                    break
                failures += 1
            alerts.append(
                Alert(
                    event="recovered",
                    title=f"[kiln] {name} recovered",
                    details={"Run": run_id, "After": f"{failures} failed run(s)"},
                    **common,
                )
            )
        durations = [
            (_aware(r.ended_at) - _aware(r.started_at)).total_seconds()
            for r in history
            if r.status == "succeeded" and r.ended_at and r.started_at
        ][:SLOW_HISTORY]
        if len(durations) >= SLOW_MIN_HISTORY and run_m["ended_at"]:
            took = (_aware(run_m["ended_at"]) - _aware(run_m["started_at"])).total_seconds()
            median = statistics.median(durations)
            factor = float(get_setting(store, "slow_factor", DEFAULT_SLOW_FACTOR))
            if median > 0 and took > factor * median:
                alerts.append(
                    Alert(
                        event="slow",
                        title=f"[kiln] {name} was slow: {took:.1f} s",
                        details={
                            "Run": run_id,
                            "Took": f"{took:.1f} s, {took / median:.1f}x the median {median:.1f} s "
                            f"of the last {len(durations)} successful runs",
                        },
                        **common,
                    )
                )
    return alerts


def raise_alert(
    store: LineageStore,
    event: str,
    run_id: str,
    message: str,
    *,
    task: str | None = None,
    cell: str | None = None,
    extra_notebooks: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The hook for checks and drift (issue 14): a check failed or was flagged (`check`), or
    drift was flagged (`drift`), in run `run_id`. Delivered to the run's notebook's routes."""
    if event not in ("check", "drift"):
        raise AlertError(f"raise_alert is for 'check' and 'drift' events, not {event!r}")
    with store.reading() as c:
        run = c.execute(select(runs).where(runs.c.id == run_id)).first()
    if run is None:
        return []
    m = run._mapping
    name = Path(m["notebook_path"]).name
    alert = Alert(
        event=event,
        subject=f"{run_id}:{task or ''}:{message[:80]}",
        scope=m["notebook_path"],
        title=f"[kiln] {name}: {'check' if event == 'check' else 'drift'}: {message}",
        owner=m["owner"],
        team=m["team"],
        link=output_link(m["output_notebook"]),
        details={"Run": run_id, "Task": task, "Cell": cell},
    )
    routes = routes_for(store, [m["notebook_path"], *extra_notebooks])
    return deliver(store, alert, routes)


def notify_run_end(
    store: LineageStore,
    run_id: str,
    *,
    notebooks: Sequence[str | Path] = (),
    schedule: str | None = None,
) -> list[dict[str, Any]]:
    """Evaluate an ended run and deliver its alerts; never raises (logs instead)."""
    try:
        with store.reading() as c:
            row = c.execute(select(runs.c.notebook_path).where(runs.c.id == run_id)).first()
        if row is None:
            return []
        paths = [row.notebook_path, *[str(Path(n).resolve()) for n in notebooks]]
        routes = routes_for(store, paths, [schedule] if schedule else [])
        if not routes:
            return []  # the usual case: one small query, nothing imported
        out: list[dict[str, Any]] = []
        for alert in run_alerts(store, run_id):
            out += deliver(store, alert, routes)
        return out
    except Exception as exc:  # alerting must never fail the run it reports on
        log.warning("kiln: alerts for run %s not evaluated: %s", run_id, exc)
        return []


def late_alert(
    schedule: Any, due: dt.datetime, now: dt.datetime, reason: str, owner: Mapping[str, Any]
) -> Alert:
    """`owner`: {"owner", "team"} of the schedule's notebook (read by the caller)."""
    late_by = (now - due).total_seconds() / 60
    return Alert(
        event="late",
        subject=f"{schedule.name}@{due.isoformat()}",
        scope=f"schedule:{schedule.name}",
        title=f"[kiln] schedule {schedule.name} is late: no run for {due:%Y-%m-%d %H:%M} UTC",
        owner=owner.get("owner"),
        team=owner.get("team"),
        details={
            "Schedule": f"{schedule.name} ({schedule.cron}, {schedule.timezone})",
            "Notebook": schedule.notebook,
            "Due": f"{due.isoformat()} ({late_by:.0f} min ago)",
            "Why": reason,
        },
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None
