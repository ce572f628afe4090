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
    check_name_lengths(relative.parts, "'path'")
    root = Path(root_dir).resolve()
    full = resolved(root / relative, "'path'")
    if full != root and not full.is_relative_to(root):
        raise PathRefused(403, f"path leaves the server root: {api_path!r}")
    return full


# POSIX file systems refuse longer names (ENAMETOOLONG) and paths; checked before any system
# call, so the answer is a 400 that says so rather than a 500 from the OSError.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4000


def check_name_lengths(parts: tuple[str, ...], what: str) -> None:
    if sum(len(p.encode("utf-8", "surrogatepass")) + 1 for p in parts) > MAX_PATH_BYTES:
        raise PathRefused(400, f"{what} is longer than {MAX_PATH_BYTES} bytes")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise PathRefused(
                400, f"{what}: the name {part[:40]!r}... is longer than {MAX_NAME_BYTES} bytes"
            )


def resolved(path: Path, what: str) -> Path:
    """`path.resolve()`, with a symlink loop or an unreadable component as a 400."""
    try:
        return path.resolve()
    except RuntimeError as exc:  # Python 3.11: "Symlink loop from ..."
        raise PathRefused(400, f"{what} goes through a symlink loop") from exc
    except OSError as exc:
        raise PathRefused(400, f"{what} cannot be resolved: {exc.strerror or exc}") from exc


def api_path_of(root_dir: str | Path, full_path: str | Path) -> str:
    """The API path (relative, '/'-separated) of a file under the root."""
    return Path(full_path).resolve().relative_to(Path(root_dir).resolve()).as_posix()


def _confined_local(root: Path, raw: str, what: str) -> Path:
    if "\x00" in raw:
        raise PathRefused(400, f"{what} contains a NUL character")
    path = Path(raw)  # no expanduser: '~' is a folder name like any other here
    check_name_lengths(path.parts, what)
    full = resolved(path if path.is_absolute() else root / path, what)
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


# Remote object stores a request may name; every other fsspec filesystem is refused. Wrappers
# ('simplecache::', 'dir::', 'reference::', zip, tar), the in-process memory filesystem and
# protocol chains resolve to local files or to other filesystems the string does not show.
REMOTE_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})


def confine_store_url(root_dir: str | Path, url: str) -> str:
    """An artifact store URL a request may name: a local folder inside the server root (returned
    as a plain path), or a remote object store (s3://, gs://, az://). The URL is resolved by
    fsspec and the resulting filesystem and path are checked, not the string."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if not isinstance(url, str) or not url.strip():
        raise PathRefused(400, "'store_url' must be a non-empty URL or path")
    if len(url) > MAX_PATH_BYTES:
        raise PathRefused(400, f"'store_url' is longer than {MAX_PATH_BYTES} characters")
    if "::" in url:
        raise PathRefused(403, f"'store_url' may not chain filesystems ('::'): {url[:200]!r}")
    root = Path(root_dir).resolve()
    if "://" not in url:
        return str(_confined_local(root, url, "'store_url'"))
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError, TypeError, OSError) as exc:
        raise PathRefused(400, f"'store_url' cannot be opened: {exc}") from exc
    if type(fs) is LocalFileSystem:
        return str(_confined_local(root, str(path), "'store_url'"))
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if not protocols & REMOTE_STORE_PROTOCOLS:
        raise PathRefused(
            403,
            f"'store_url': the {type(fs).__name__} filesystem is not allowed here "
            f"(a folder inside the server root, or {', '.join(sorted(REMOTE_STORE_PROTOCOLS))})",
        )
    return url
