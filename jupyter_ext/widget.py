"""An ipywidgets view of a notebook's pipeline: the DAG, its diagnostics and live run progress.

Works wherever ipywidgets' built-in widgets render (JupyterLab, classic Notebook, VS Code): the
graph is SVG computed in Python, so there is no second frontend bundle. It calls the same
library as the CLI and the server: `compiler.compile.api` to compile, `compiler.ops.run` to run.

    from jupyter_ext import PipelineWidget
    PipelineWidget("analysis.ipynb")
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from compiler.compile.api import compile_notebook
from compiler.model.diagnostics import NotebookLoadError
from compiler.model.ids import new_run_id
from compiler.ops.run import prepare_run, run_notebook
from jupyter_ext.render import render_diagnostics, render_run, render_svg
from jupyter_ext.runs import RunRecord


class PipelineWidget(widgets.VBox):
    """The compiled pipeline of `notebook`, with Run and Recompile buttons."""

    def __init__(
        self,
        notebook: str | Path,
        *,
        params: dict[str, Any] | None = None,
        scheduler: str | None = None,
        store_url: str | None = None,
        lineage_db: str | None = None,
        workers: int | None = None,
        use_cache: bool = True,
        **kwargs: Any,
    ):
        self.path = Path(notebook).resolve()
        self.params = dict(params or {})
        self.run_options: dict[str, Any] = {
            "scheduler": scheduler,
            "store_url": store_url,
            "lineage_db": lineage_db,
            "workers": workers,
            "use_cache": use_cache,
        }
        self.result: Any = None  # the last CompileResult
        self.record: RunRecord | None = None  # the last run
        self._thread: threading.Thread | None = None

        self.title = widgets.HTML()
        self.run_button = widgets.Button(
            description="Run pipeline", icon="play", button_style="primary"
        )
        self.recompile_button = widgets.Button(description="Recompile", icon="refresh")
        self.run_status = widgets.HTML()
        self.graph = widgets.HTML()
        self.diagnostics = widgets.HTML()
        self.run_button.on_click(lambda _: self.start_run())
        self.recompile_button.on_click(lambda _: self.compile())
        super().__init__(
            children=[
                self.title,
                widgets.HBox([self.run_button, self.recompile_button]),
                self.run_status,
                self.graph,
                self.diagnostics,
            ],
            **kwargs,
        )
        self.add_class("kiln-PipelineWidget")
        self.compile()

    @property
    def spec(self) -> dict[str, Any] | None:
        return self.result.spec if self.result is not None else None

    def compile(self) -> Any:
        """Compile the notebook file again (save it first to see your edits)."""
        try:
            self.result = compile_notebook(self.path)
        except NotebookLoadError as exc:
            self.result = None
            self.title.value = f"<b>{self.path.name}</b>"
            self.graph.value = ""
            self.diagnostics.value = render_diagnostics(
                [{"severity": "error", "message": str(exc), "cell_index": None}]
            )
            self.run_button.disabled = True
            return None
        self._render()
        return self.result

    def start_run(self) -> RunRecord | None:
        """Start a run in a background thread; the widget follows it live."""
        if self._thread is not None and self._thread.is_alive():
            return self.record
        if self.compile() is None or self.spec is None:
            return None
        record = self._new_record()
        self._thread = threading.Thread(
            target=self._run, args=(record,), name="kiln-widget-run", daemon=True
        )
        self._thread.start()
        return record

    def run(self) -> RunRecord | None:
        """Run the pipeline and wait for it (the widget updates while it runs)."""
        if self.compile() is None or self.spec is None:
            return None
        record = self._new_record()
        self._run(record)
        return record

    def _new_record(self) -> RunRecord:
        self.record = RunRecord(
            run_id=new_run_id(),
            path=self.path.name,
            notebook_file=self.path,
            root_dir=self.path.parent,
            parameters=self.params,
            scheduler=self.run_options.get("scheduler"),
        )
        self.run_button.disabled = True
        self._render()
        return self.record

    def _run(self, record: RunRecord) -> None:
        def on_event(event: Mapping[str, Any]) -> None:
            record.record_event(event)
            self._render()

        options = {k: v for k, v in self.run_options.items() if v is not None}
        try:
            prepared = prepare_run(
                self.path, spec=self.spec or {}, parameters=self.params, run_id=record.run_id
            )
            result = run_notebook(prepared, listeners=[on_event], **options)
        except Exception as exc:
            record.finish(None, "".join(traceback.format_exception_only(type(exc), exc)).strip())
        else:
            record.finish(result, None)
        self.run_button.disabled = False
        self._render()

    def _render(self) -> None:
        spec = self.spec
        result = self.result
        run = self.record.to_dict() if self.record else None
        if spec:
            self.title.value = (
                f"<b>Pipeline {spec['name']}</b> · {len(spec['tasks'])} tasks · "
                f"version <code>{spec['version'][:8]}</code>"
            )
        else:
            self.title.value = f"<b>{self.path.name}</b>: does not compile"
        svg = render_svg(spec, run["tasks"] if run else None)
        self.graph.value = f'<div class="kiln-PipelineWidget-graph">{svg}</div>' if svg else ""
        self.diagnostics.value = render_diagnostics(
            [d.to_dict() for d in result.diagnostics] if result is not None else []
        )
        self.run_status.value = render_run(run)
        running = self.record is not None and not self.record.done
        self.run_button.disabled = spec is None or running
