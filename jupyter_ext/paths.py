"""Notebook paths as the REST API receives them: relative to the server's root, confined to it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath


class PathRefused(Exception):
    """The path is not an acceptable notebook path; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def resolve_api_path(root_dir: str | Path, api_path: object) -> Path:
    """The real file an API path names, or PathRefused.

    API paths are '/'-separated and relative to the server root. Absolute paths, drive letters,
    `..` components and symlinks that lead outside the root are refused (403): the REST API must
    never read what the Contents API would not serve.
    """
    if not isinstance(api_path, str) or not api_path.strip():
        raise PathRefused(400, "'path' must be a non-empty path relative to the server root")
    if "\x00" in api_path:
        raise PathRefused(400, "'path' contains a NUL character")
    if api_path.startswith(("/", "\\")) or PureWindowsPath(api_path).drive:
        raise PathRefused(403, f"absolute paths are not allowed: {api_path!r}")
    relative = PurePosixPath(api_path.replace("\\", "/"))
    if any(part == ".." for part in relative.parts):
        raise PathRefused(403, f"path leaves the server root: {api_path!r}")
    root = Path(root_dir).resolve()
    full = (root / relative).resolve()
    if full != root and not full.is_relative_to(root):
        raise PathRefused(403, f"path leaves the server root: {api_path!r}")
    return full


def api_path_of(root_dir: str | Path, full_path: str | Path) -> str:
    """The API path (relative, '/'-separated) of a file under the root."""
    return Path(full_path).resolve().relative_to(Path(root_dir).resolve()).as_posix()
