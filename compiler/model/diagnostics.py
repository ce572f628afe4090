"""Diagnostics: errors and warnings that carry their place in the notebook.

CLI, REST API and UI all render this one record, so a message reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    cell_index: int | None = None
    cell_id: str | None = None
    line: int | None = None
    col: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def location(self) -> str:
        if self.cell_index is None:
            return "notebook"
        where = f"cell {self.cell_index}"
        if self.line is not None:
            where += f", line {self.line}"
            if self.col is not None:
                where += f", col {self.col}"
        if self.cell_id is not None:
            # The index moves when cells are inserted above; the id does not.
            where += f" (id {self.cell_id})"
        return where

    def render(self) -> str:
        return f"{self.severity}: {self.location()}: {self.message} [{self.code}]"


def has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


class CompileError(Exception):
    """Raised when a notebook cannot be compiled; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        errors = [d.render() for d in diagnostics if d.severity == "error"]
        super().__init__("\n".join(errors) or "compilation failed")


class NotebookLoadError(Exception):
    """The file cannot be read as a Jupyter notebook (missing, not JSON, invalid nbformat)."""
