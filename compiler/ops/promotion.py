"""Promotion: a schedule runs an exported bundle version, not whatever the notebook says now.

    promote(store, "report.ipynb")                # export the notebook as it is, promote that
    promote(store, "report.ipynb", version="3f2a...")   # an already exported bundle version
    rollback(store, "nightly")                    # back to the version promoted before
    rollback(store, "nightly", to_last_good=True) # back to the last version whose runs passed

A promoted schedule runs `pipelines/NAME/VERSION/` (compiler/export.py) with the live notebook's
folder as its working folder: its data files, cache and lineage stay where they were, while the
code is the bundle's snapshot. Editing the notebook changes nothing in production until the
next promote. Every promotion and rollback is a `promotions` row with who and when; schedules
made before this existed are in "live" mode (migration 0005) until promoted.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from compiler.lineage.schema import promotions, runs, schedules
from compiler.lineage.store import LineageStore
from compiler.model.clock import utcnow
from compiler.schedule.scheduler import Schedule, ScheduleError, get_schedule, list_schedules

USER_ENV = "KILN_USER"  # who promotes, when the login name is not the person (a CI job)


class PromotionError(ValueError):
    """A promotion or rollback that cannot be done: the message says what to do instead."""


@dataclass(frozen=True)
class Promotion:
    schedule: str
    action: str
    version: str
    bundle_path: str
    previous_version: str | None
    user: str | None
    at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def current_user() -> str | None:
    if os.environ.get(USER_ENV):
        return os.environ[USER_ENV]
    try:
        return getpass.getuser()
    except Exception:
        return None


def bundle_dir(notebook: Path, name: str, version: str) -> Path:
    return notebook.parent / "pipelines" / name / version


def exported_versions(notebook: Path, name: str) -> list[str]:
    folder = notebook.parent / "pipelines" / name
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (p / "bundle.json").is_file()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime)]


def _export_now(notebook: Path) -> tuple[str, Path]:
    from compiler.compile.api import compile_notebook
    from compiler.ops.export import export_bundle

    result = compile_notebook(notebook)
    if result.spec is None:
        errors = "; ".join(d.render() for d in result.diagnostics if d.severity == "error")
        raise PromotionError(
            f"{notebook.name} does not compile, so it cannot be promoted: {errors}"
        )
    exported = export_bundle(result, notebook)
    return exported.version, exported.path


def _schedules_of(store: LineageStore, notebook: Path, schedule: str | None) -> list[Schedule]:
    if schedule is not None:
        found = get_schedule(store, schedule)
        if Path(found.notebook).resolve() != notebook:
            raise PromotionError(f"schedule {schedule!r} runs {found.notebook}, not {notebook}")
        return [found]
    mine = [s for s in list_schedules(store) if Path(s.notebook).resolve() == notebook]
    if not mine:
        raise PromotionError(
            f"no schedule runs {notebook.name}: add one first "
            f"(kiln schedule add NAME {notebook.name} --cron '0 6 * * *')"
        )
    return mine


def promote(
    store: LineageStore,
    notebook: str | Path,
    *,
    version: str | None = None,
    schedule: str | None = None,
    user: str | None = None,
    now: dt.datetime | None = None,
) -> list[Promotion]:
    """Make a bundle version the production version of the notebook's schedules (or of one)."""
    path = Path(notebook).resolve()
    if not path.is_file():
        raise PromotionError(f"{notebook}: no such notebook")
    targets = _schedules_of(store, path, schedule)
    if version is None:
        version, bundle = _export_now(path)
    else:
        bundle = _find_bundle(path, version)
        version = bundle.name
    return [
        _record(store, s, "promote", version, bundle, user or current_user(), now) for s in targets
    ]


def _find_bundle(notebook: Path, version: str) -> Path:
    folder = notebook.parent / "pipelines"
    matches = sorted(
        p
        for p in folder.glob(f"*/{version}*")
        if (p / "bundle.json").is_file() and _bundle_notebook(p) == notebook.name
    )
    if len(matches) == 1:
        return matches[0]
    known = sorted({p.name for p in folder.glob("*/*") if (p / "bundle.json").is_file()})
    if not matches:
        listing = ", ".join(known) if known else "none yet (kiln export NOTEBOOK makes one)"
        raise PromotionError(
            f"no exported bundle version {version!r} of {notebook.name}; exported: {listing}"
        )
    raise PromotionError(f"version {version!r} is ambiguous: {', '.join(p.name for p in matches)}")


def _bundle_notebook(bundle: Path) -> str | None:
    try:
        return str(json.loads((bundle / "bundle.json").read_text())["notebook"]["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record(
    store: LineageStore,
    schedule: Schedule,
    action: str,
    version: str,
    bundle: Path,
    user: str | None,
    now: dt.datetime | None,
) -> Promotion:
    at = now or utcnow()
    row = {
        "schedule_name": schedule.name,
        "action": action,
        "version": version,
        "bundle_path": str(bundle),
        "previous_version": schedule.promoted_version,
        "user": user,
        "at": at,
    }

    def work(c: Any) -> None:
        c.execute(
            update(schedules)
            .where(schedules.c.id == schedule.id)
            .values(mode="promoted", promoted_version=version, promoted_bundle=str(bundle))
        )
        c.execute(insert(promotions).values(**row))

    store.write(work)
    return Promotion(
        schedule.name, action, version, str(bundle), schedule.promoted_version, user, at.isoformat()
    )


def history(store: LineageStore, schedule: str | None = None) -> list[Promotion]:
    query = select(promotions).order_by(promotions.c.id)
    if schedule is not None:
        query = query.where(promotions.c.schedule_name == schedule)
    with store.reading() as c:
        rows = c.execute(query).all()
    return [
        Promotion(
            r.schedule_name,
            r.action,
            r.version,
            r.bundle_path,
            r.previous_version,
            r.user,
            (r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC)).isoformat(),
        )
        for r in rows
    ]


def _stack(entries: list[Promotion]) -> list[Promotion]:
    """The promoted versions still "under" the current one: a promote pushes, a rollback goes
    back to its target, so rolling back twice goes two versions back."""
    stack: list[Promotion] = []
    for entry in entries:
        if entry.action == "promote":
            stack.append(entry)
        else:
            while stack and stack[-1].version != entry.version:
                stack.pop()
            if not stack:
                stack.append(entry)
    return stack


def rollback(
    store: LineageStore,
    schedule: str,
    *,
    to_last_good: bool = False,
    user: str | None = None,
    now: dt.datetime | None = None,
) -> Promotion:
    try:
        current = get_schedule(store, schedule)
    except ScheduleError as exc:
        raise PromotionError(str(exc)) from None
    if current.mode != "promoted":
        raise PromotionError(
            f"schedule {schedule!r} runs the live notebook; there is nothing to roll back "
            f"(kiln promote {Path(current.notebook).name} makes a production version)"
        )
    stack = _stack(history(store, schedule))
    earlier = stack[:-1]
    if to_last_good:
        earlier = [e for e in earlier if _passed(store, Path(e.bundle_path))]
        if not earlier:
            raise PromotionError(
                f"schedule {schedule!r}: no earlier promoted version has a successful run"
            )
    if not earlier:
        raise PromotionError(f"schedule {schedule!r} has no earlier promoted version to go back to")
    target = earlier[-1]
    return _record(
        store,
        current,
        "rollback",
        target.version,
        Path(target.bundle_path),
        user or current_user(),
        now,
    )


def _passed(store: LineageStore, bundle: Path) -> bool:
    """Whether a run of this bundle succeeded (the checks of issue 14 will refine "passed")."""
    snapshot = _bundle_notebook(bundle)
    if snapshot is None:
        return False
    with store.reading() as c:
        row = c.execute(
            select(runs.c.id).where(
                runs.c.notebook_path == str((bundle / snapshot).resolve()),
                runs.c.status == "succeeded",
            )
        ).first()
    return row is not None
