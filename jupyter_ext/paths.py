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


def _confined_local(root: Path, raw: str, what: str) -> Path:
    path = Path(raw).expanduser()
    full = (path if path.is_absolute() else root / path).resolve()
    if full != root and not full.is_relative_to(root):
        raise PathRefused(403, f"{what} must be inside the server root: {raw!r}")
    return full


def confine_lineage_url(root_dir: str | Path, url: str) -> str:
    """A lineage database URL a request may name: a SQLite file inside the server root (a
    relative path is taken from the root), or a database server (PostgreSQL, ...)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise PathRefused(400, f"'lineage_db' is not a database URL: {url!r}") from exc
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    full = _confined_local(Path(root_dir).resolve(), str(parsed.database), "'lineage_db'")
    return parsed.set(database=str(full)).render_as_string(hide_password=False)


def confine_store_url(root_dir: str | Path, url: str) -> str:
    """An artifact store URL a request may name: a local folder inside the server root, or a
    remote fsspec URL (s3://, gs://, ...)."""
    if "://" in url and not url.startswith(("file://", "local://")):
        return url
    local = url.split("://", 1)[1] if "://" in url else url
    return str(_confined_local(Path(root_dir).resolve(), local, "'store_url'"))
