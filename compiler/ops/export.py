"""Export a compiled pipeline as a versioned bundle: `pipelines/NAME/VERSION/`.

A bundle is everything needed to run the pipeline without JupyterLab or the original notebook:
the spec, the generated module, a runner entry point, the notebook snapshot and pinned
requirements. Same notebook, same version: a bundle is written once and never changed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from compiler import __version__
from compiler.compile.api import CompileResult
from compiler.compile.emit import spec_json
from compiler.model.hashing import short_digest
from compiler.runtime.cache import local_module_digests, local_module_paths

RUN_PY = '''#!/usr/bin/env python3
"""Run pipeline {name!r} version {version} on Dask, without JupyterLab or the notebook.

    python run.py [-p NAME VALUE ...] [--scheduler ADDRESS] [--workers N] [--no-cache] [--json]

Needs the packages in requirements.txt (nbkiln included). Lineage is recorded like `kiln run`.
"""

import sys
from pathlib import Path

from compiler.cli.bundle import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parent, sys.argv[1:]))
'''


@dataclass(frozen=True)
class ExportResult:
    path: Path
    name: str
    version: str
    created: bool  # False when this version was already exported

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "created": self.created,
        }


def imported_modules(spec: dict[str, Any]) -> list[str]:
    """Top-level modules the tasks import (setup and cells), in first-seen order."""
    return list(dict.fromkeys(m for t in spec["tasks"] for m in t.get("imports", [])))


_NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.pyc")


def bundle_version(pipeline_version: str, modules: dict[str, Path]) -> str:
    """The pipeline's version, or, when its tasks import helpers from beside the notebook, a
    version that also covers their source: an edited helper is a new bundle, not a stale one."""
    if not modules:
        return pipeline_version
    digests = local_module_digests(sorted(modules), next(iter(modules.values())).parent)
    return short_digest([pipeline_version, digests])


def requirements_for(modules: list[str]) -> list[str]:
    """Pinned distributions providing `modules`, as installed here; stdlib is left out."""
    providers = importlib.metadata.packages_distributions()
    pins: dict[str, str] = {"nbkiln": f"nbkiln=={__version__}"}
    for module in modules:
        if module in sys.stdlib_module_names:
            continue
        for dist in providers.get(module, []):
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
            pins.setdefault(dist.lower(), f"{dist}=={version}")
    return sorted(pins.values(), key=str.lower)


def export_bundle(
    result: CompileResult, notebook_path: str | Path, root: str | Path | None = None
) -> ExportResult:
    """Write the bundle under ROOT/pipelines/NAME/VERSION (ROOT: the notebook's folder).

    The bundle is assembled in a temporary folder beside its target and renamed into place,
    so a bundle directory is either complete or absent.
    """
    spec = result.spec
    if spec is None:
        raise ValueError("the notebook has errors; fix them before exporting")
    notebook_path = Path(notebook_path).resolve()
    base = Path(root).resolve() if root is not None else notebook_path.parent
    modules = local_module_paths(imported_modules(spec), notebook_path.parent)
    version = bundle_version(spec["version"], modules)
    target = base / "pipelines" / spec["name"] / version
    if target.exists():
        return ExportResult(target, spec["name"], version, created=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec['version']}."))
    try:
        (staging / "pipeline.json").write_text(spec_json(spec), encoding="utf-8")
        (staging / "tasks.py").write_text(result.module_source(), encoding="utf-8")
        (staging / "run.py").write_text(
            RUN_PY.format(name=spec["name"], version=spec["version"]), encoding="utf-8"
        )
        os.chmod(staging / "run.py", 0o755)
        # The notebook as it was compiled, not as it is on disk now (it may have been saved
        # since): the snapshot is the code the spec describes.
        (staging / spec["notebook"]["file"]).write_text(
            nbformat.writes(result.pipeline.notebook.node), encoding="utf-8"
        )
        for source in modules.values():  # helpers the tasks import travel with them
            if source.is_dir():
                shutil.copytree(source, staging / source.name, ignore=_NOT_SOURCE)
            else:
                shutil.copyfile(source, staging / source.name)
        requirements = requirements_for([m for m in imported_modules(spec) if m not in modules])
        (staging / "requirements.txt").write_text("\n".join(requirements) + "\n")
        manifest = {
            "name": spec["name"],
            "version": version,
            "pipeline_version": spec["version"],
            "notebook": spec["notebook"],
            "local_modules": sorted(source.name for source in modules.values()),
            "kiln": __version__,
        }
        (staging / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(staging, 0o755)
        try:
            staging.rename(target)
        except OSError:
            if target.exists():  # another export of the same version won the race
                shutil.rmtree(staging, ignore_errors=True)
                return ExportResult(target, spec["name"], version, created=False)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(target, spec["name"], version, created=True)
