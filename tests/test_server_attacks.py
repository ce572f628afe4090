"""Crafted requests against every /kiln/ endpoint of a live jupyter_server: symlink loops,
300-character names, NUL bytes, JSON nested 100,000 deep, fsspec-chained store URLs, crons that
are never due, time zones that are folders, names no route can address, values of the wrong
type. Each must be a 4xx with a message (none a 500), and nothing may be written outside the
server root. Resuming a schedule needs the `execute` permission."""

# ruff: noqa: F811
from __future__ import annotations

import json
import os
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer

# See tests/test_server.py for why pytest-jupyter's fixtures are imported, not registered.
from pytest_jupyter.jupyter_server import *  # noqa: F403
from tornado.httpclient import HTTPClientError

from compiler.lineage import open_store
from compiler.schedule.scheduler import add_schedule
from jupyter_ext.paths import PathRefused, confine_store_url
from tests.nbutil import make_notebook
from tests.test_server import THREE_TASKS, Kiln, kiln, root, run  # noqa: F401

DENY: set[str] = set()  # actions the test authorizer refuses on the "kiln" resource


class Permissions(Authorizer):
    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (resource == "kiln" and action in DENY)


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ext": True}, "authorizer_class": Permissions}
    }


@pytest.fixture(autouse=True)
def everything_allowed():
    DENY.clear()
    yield
    DENY.clear()


def answer_of(kiln: Kiln, method: str, parts: tuple[str, ...], body: Any, params: dict) -> tuple:
    """(status, JSON body) of any request, successful or not."""
    kwargs: dict[str, Any] = {"method": method, "params": params}
    if method in ("POST", "PUT"):
        kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body or {})
    try:
        response = kiln.run(kiln.fetch("kiln", *parts, **kwargs))
    except HTTPClientError as exc:
        assert exc.response is not None
        raw = exc.response.body
        return exc.code, json.loads(raw) if raw else {}
    return response.code, json.loads(response.body) if response.body else {}


class Attacks:
    """Sends requests and keeps the figures: tried, and answered as they must be."""

    def __init__(self, kiln: Kiln):
        self.kiln = kiln
        self.tried = 0
        self.failures: list[str] = []

    def expect_4xx(
        self,
        label: str,
        method: str,
        parts: tuple[str, ...],
        body: Any = None,
        params: dict | None = None,
        fragment: str | None = None,
    ) -> None:
        self.tried += 1
        code, answer = answer_of(self.kiln, method, parts, body, params or {})
        message = str(answer.get("message") or "")
        if not 400 <= code < 500:
            self.failures.append(f"{label}: {method} {'/'.join(parts)} -> {code} {message[:200]}")
        elif not message or "Unhandled error" in message:
            self.failures.append(f"{label}: {code} without a message: {answer}")
        elif fragment and fragment not in message:
            self.failures.append(f"{label}: {code} {message[:200]!r} lacks {fragment!r}")

    def report(self, what: str) -> None:
        print(
            f"\n{what}: {self.tried - len(self.failures)}/{self.tried} answered 4xx with a message"
        )
        assert not self.failures, "\n".join(self.failures)


def path_endpoints(path: str) -> list[tuple[str, str, tuple[str, ...], Any, dict]]:
    """Every endpoint that takes a notebook path, with `path` in it."""
    return [
        ("compile", "POST", ("compile",), {"path": path}, {}),
        ("compile-content", "POST", ("compile",), {"path": path, "notebook": {"cells": []}}, {}),
        ("run", "POST", ("runs",), {"path": path}, {}),
        ("runs", "GET", ("runs",), None, {"path": path}),
        ("lineage", "GET", ("lineage",), None, {"path": path}),
        ("outputs", "POST", ("outputs",), {"path": path, "run_id": "ab12"}, {}),
        ("export", "POST", ("export",), {"path": path}, {}),
        ("schedules", "GET", ("schedules",), None, {"path": path}),
        ("add-schedule", "POST", ("schedules",), {"path": path, "cron": "0 6 * * *"}, {}),
        ("pause", "POST", ("schedules", "daily", "pause"), {}, {"path": path}),
        ("resume", "POST", ("schedules", "daily", "resume"), {}, {"path": path}),
        ("remove", "DELETE", ("schedules", "daily"), None, {"path": path}),
        ("schedule-runs", "GET", ("schedules", "daily", "runs"), None, {"path": path}),
    ]


def test_hostile_paths_on_every_endpoint_are_4xx_with_a_message(kiln, root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    make_notebook(outside / "secret.ipynb", [("x = 1", ["task:t"])])
    os.symlink(root / "loop.ipynb", root / "loop.ipynb")  # a link to itself
    os.symlink(root / "a.ipynb", root / "b.ipynb")
    os.symlink(root / "b.ipynb", root / "a.ipynb")  # a loop of two
    (root / "dir.ipynb").mkdir()
    os.symlink(outside / "secret.ipynb", root / "escape.ipynb")
    paths = [
        "loop.ipynb",
        "a.ipynb",
        "sub/../loop.ipynb",
        "x" * 300 + ".ipynb",
        "d/" + "y" * 256 + "/n.ipynb",
        ("deep/" * 900) + "n.ipynb",
        "nul\x00.ipynb",
        "escape.ipynb",
        "../outside/secret.ipynb",
        "/etc/passwd",
        "dir.ipynb",
        "",
    ]
    attacks = Attacks(kiln)
    for path in paths:
        for label, method, parts, body, params in path_endpoints(path):
            if label == "runs" and path in ("dir.ipynb", "nul\x00.ipynb"):
                # A filter, not a file: a folder (and the name tornado reads once it drops the
                # NUL) matches no run: 200 with an empty list.
                code, answer = answer_of(kiln, method, parts, body, params)
                assert (code, answer) == (200, {"runs": []}), (path, code, answer)
                continue
            attacks.expect_4xx(f"{label} {path[:30]!r}", method, parts, body, params)
    attacks.report("hostile paths")
    assert not list(outside.glob("**/.kiln"))  # nothing was written beside the outside notebook


def test_deep_and_malformed_bodies_are_400(kiln, root):
    make_notebook(root / "three.ipynb", THREE_TASKS)
    deep_text = '{"path": "three.ipynb", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    nested = '{"path": "three.ipynb", "params": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}"
    deep_notebook = json.dumps(
        {"path": "three.ipynb", "notebook": {"cells": [], "metadata": {"m": "P"}}}
    ).replace('"P"', "[" * 3000 + "]" * 3000)
    bodies = {
        "100k-deep": deep_text,
        "900-deep-object": nested,
        "3000-deep-notebook": deep_notebook,
        "not-json": "{nope",
        "array": "[1, 2]",
        "huge-int": '{"path": "three.ipynb", "workers": ' + "9" * 5000 + "}",
        "not-utf8": b'{"path": "\xff\xfe"}',
    }
    attacks = Attacks(kiln)
    for label, body in bodies.items():
        for parts in (("compile",), ("runs",), ("outputs",), ("export",), ("schedules",)):
            attacks.expect_4xx(f"{label} {parts[0]}", "POST", parts, body)
    attacks.report("malformed bodies")


def test_a_very_deep_expression_is_a_diagnostic_then_a_400(kiln, root):
    make_notebook(root / "deep.ipynb", [("x = " + " + ".join(["1"] * 10_000), ["task:deep"])])
    code, answer = answer_of(kiln, "POST", ("compile",), {"path": "deep.ipynb"}, {})
    assert code == 200 and answer["ok"] is False
    assert [d["code"] for d in answer["diagnostics"]] == ["too-complex"]
    attacks = Attacks(kiln)
    for parts in (("runs",), ("export",)):
        attacks.expect_4xx(parts[0], "POST", parts, {"path": "deep.ipynb"}, fragment="cell 0")
    attacks.report("deep expression")


def test_store_urls_are_confined_by_the_filesystem_they_resolve_to(kiln, root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    make_notebook(root / "three.ipynb", THREE_TASKS)
    urls = [
        f"simplecache::file://{elsewhere}",
        f"filecache::file://{elsewhere}",
        f"dir::file://{elsewhere}",
        f"blockcache::file://{elsewhere}",
        f"file://{elsewhere}",
        f"local://{elsewhere}",
        f"file://{root}/../{elsewhere.name}",
        str(elsewhere),
        f"{root}/../{elsewhere.name}",
        "memory://kiln",
        f"zip://x::file://{elsewhere}/a.zip",
        f"reference://{elsewhere}",
        "ftp://127.0.0.1:1/x",
        "http://127.0.0.1:1/store",
        "nosuchprotocol://x",
        "x" * 5000,
    ]
    attacks = Attacks(kiln)
    for url in urls:
        attacks.expect_4xx(
            f"store_url {url[:40]!r}", "POST", ("runs",), {"path": "three.ipynb", "store_url": url}
        )
    for url in (f"sqlite:///{elsewhere}/l.db", f"sqlite:///{root}/../{elsewhere.name}/l.db"):
        attacks.expect_4xx(
            f"lineage_db {url[:40]!r}",
            "POST",
            ("runs",),
            {"path": "three.ipynb", "lineage_db": url},
        )
        attacks.expect_4xx(
            f"lineage_db query {url[:30]!r}",
            "GET",
            ("lineage",),
            None,
            {"path": "three.ipynb", "lineage_db": url},
        )
    attacks.report("store and database URLs")
    assert list(elsewhere.iterdir()) == []
    # What stays allowed: a folder inside the root, as a plain path, and a remote store.
    assert confine_store_url(root, "file://" + str(root / "store")) == str(root / "store")
    assert confine_store_url(root, "store") == str(root / "store")
    with pytest.raises(PathRefused):
        confine_store_url(root, "simplecache::s3://bucket/x")


def test_schedule_input_is_validated_like_the_cli(kiln, root):
    make_notebook(root / "n.ipynb", [("n = 3\nlabel = 'x'", ["parameters"]), ("y = n", ["task:t"])])
    base = {"path": "n.ipynb", "cron": "0 6 * * *"}
    cases = [
        ({"cron": "0 0 31 2 *"}, "never due"),
        ({"cron": "0 0 30 2 *"}, "never due"),
        ({"cron": "* * * *"}, "invalid cron"),
        ({"cron": "0 6 * * * * *"}, "invalid cron"),
        ({"cron": "x" * 5000}, "invalid cron"),
        ({"timezone": "Europe"}, "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"timezone": "Europe/"}, "unknown time zone"),
        ({"timezone": "x" * 300}, "unknown time zone"),
        ({"name": "s" * 300}, "use up to 200"),
        ({"name": "a/b"}, "schedule name"),
        ({"name": "-x"}, "schedule name"),
        ({"parameters": {"n": "not an int"}}, "parameter 'n' is a int"),
        ({"parameters": {"n": True}}, "parameter 'n' is a int"),
        ({"parameters": {"n": 1.5}}, "parameter 'n' is a int"),
        ({"parameters": {"label": 3}}, "parameter 'label' is a str"),
        ({"parameter_texts": {"n": "many"}}, "cannot read 'many'"),
        ({"parameters": {"ghost": 1}}, "unknown parameter"),
    ]
    attacks = Attacks(kiln)
    for extra, fragment in cases:
        attacks.expect_4xx(
            str(extra)[:50], "POST", ("schedules",), {**base, **extra}, fragment=fragment
        )
    (root / "README.md").write_text("# not a notebook\n")
    attacks.expect_4xx("README.md", "POST", ("schedules",), {**base, "path": "README.md"})
    attacks.report("schedule input")
    assert kiln.get("schedules", path="n.ipynb")["schedules"] == []
    # Runs get the same typed check.
    code, answer = answer_of(kiln, "POST", ("runs",), {"path": "n.ipynb", "params": {"n": "x"}}, {})
    assert code == 400 and "parameter 'n' is a int" in answer["message"]


def test_resuming_a_schedule_needs_the_execute_permission(kiln, root):
    notebook = make_notebook(root / "nightly.ipynb", [("x = 1", ["task:t"])], owner="Ana Lima")
    with open_store(None, notebook) as store:
        add_schedule(store, "nightly", notebook, "0 6 * * *")
    DENY.add("execute")  # may change things, may not run notebook code
    code, answer = answer_of(
        kiln, "POST", ("schedules", "nightly", "pause"), {}, {"path": "nightly.ipynb"}
    )
    assert code == 200 and answer["paused"] is True
    code, _ = answer_of(
        kiln, "POST", ("schedules", "nightly", "resume"), {}, {"path": "nightly.ipynb"}
    )
    assert code == 403
    DENY.clear()
    code, answer = answer_of(
        kiln, "POST", ("schedules", "nightly", "resume"), {}, {"path": "nightly.ipynb"}
    )
    assert code == 200 and answer["paused"] is False
