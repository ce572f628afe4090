"""Shared fixtures. Keep this small; suites with many helpers keep them in their own module."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from compiler.model.hashing import file_digest


@pytest.fixture(scope="session")
def dask_scheduler_address() -> Iterator[str]:
    """One LocalCluster (2 worker processes, 1 thread each) shared by runtime tests."""
    from compiler.runtime.cluster import local_worker_resources
    from tests.clusters import loopback_cluster

    memory = 4 * 1024**3
    cluster = loopback_cluster(
        2,
        dashboard_address="127.0.0.1:0",
        memory_limit=memory,
        resources=local_worker_resources(memory, 0),
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _version(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Callable[..., tuple[dict[str, Any], Path]]:
    """Write a tagged notebook and its spec by hand (what the compiler would produce).

    make_pipeline(tasks=[{"name": "load", "source": "df = 1", "outputs": ["df"]}, ...],
                  setup="import os", parameters={"n": 3})
    Task keys: name, source (str or list of cell sources), inputs {name: task}, outputs,
    parameters, after, resources, retries, timeout, cache, reads.
    """

    def build(
        tasks: list[dict[str, Any]],
        setup: str = "",
        parameters: dict[str, Any] | None = None,
        name: str = "pipeline",
        folder: Path | None = None,
    ) -> tuple[dict[str, Any], Path]:
        folder = folder or tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        parameters = parameters or {}
        nb = nbformat.v4.new_notebook()
        if setup:
            nb.cells.append(nbformat.v4.new_code_cell(setup, metadata={"tags": ["setup"]}))
        if parameters:
            source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
            nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
        spec_tasks: list[dict[str, Any]] = []
        versions: dict[str, str] = {}
        for task in tasks:
            sources = task["source"] if isinstance(task["source"], list) else [task["source"]]
            code = []
            for i, source in enumerate(sources):
                cell = nbformat.v4.new_code_cell(source)
                if i == 0:
                    cell.metadata["tags"] = [f"task:{task['name']}"]
                nb.cells.append(cell)
                code.append({"cell_id": cell.id, "cell_index": len(nb.cells) - 1, "source": source})
            inputs = task.get("inputs", {})
            upstream = list(dict.fromkeys([*inputs.values(), *task.get("after", [])]))
            versions[task["name"]] = _version(sources, setup, [versions[u] for u in upstream])
            spec_tasks.append(
                {
                    "name": task["name"],
                    "version": task.get("version", versions[task["name"]]),
                    "upstream": upstream,
                    "inputs": inputs,
                    "outputs": task.get("outputs", []),
                    "parameters": task.get("parameters", []),
                    "cells": [c["cell_id"] for c in code],
                    "code": code,
                    "setup": setup,
                    "resources": task.get("resources", {}),
                    "retries": task.get("retries", 0),
                    "timeout": task.get("timeout"),
                    "cache": task.get("cache", True),
                    "datasets": {"reads": task.get("reads", []), "writes": []},
                    "imports": [],
                }
            )
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, str(path))
        spec = {
            "schema_version": 1,
            "name": name,
            "version": _version([t["version"] for t in spec_tasks]),
            "notebook": {"file": path.name, "digest": file_digest(path)},
            "parameters": parameters,
            "tasks": spec_tasks,
        }
        return spec, path

    return build
