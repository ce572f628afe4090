"""Kiln inside Jupyter: the server extension (REST endpoints under /kiln/), the prebuilt
JupyterLab extension (jupyter_ext/labextension, built from jupyter_ext/src) and an
ipywidgets widget for the same graph and run progress inside a notebook's output."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("nbkiln")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["PipelineWidget", "__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nbkiln"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_ext.app import KilnExtension

    return [{"module": "jupyter_ext", "app": KilnExtension}]


def __getattr__(name: str) -> Any:
    # The widget needs ipywidgets; the server extension must load without importing it.
    if name == "PipelineWidget":
        from jupyter_ext.widget import PipelineWidget

        return PipelineWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
