"""One canonical digest for everything Kiln identifies by content.

Versions, cache keys, spec digests, notebook digests and bundle versions all hash the same
canonical JSON form: sorted keys, no spaces, ASCII escapes (a lone surrogate in a string still
encodes), and a stable text for values JSON cannot hold (a set's members sorted, since its
repr follows the per-process hash seed; anything else by repr). Two past bugs came from four
copies of this with different rules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MISSING = "missing"  # the digest of a file that does not exist
SHORT = 16  # hex digits of a version or bundle version
_CHUNK = 1 << 20


def _stable_text(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(canonical_json(v) for v in value)
    return repr(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_stable_text)


def digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON form of `value`."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def short_digest(value: Any) -> str:
    return digest(value)[:SHORT]


def text_digest(text: str | bytes) -> str:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path, pattern: str = "*") -> str:
    """sha256 of a file's content; a folder (e.g. a parquet dataset) hashes its files, or only
    those matching `pattern`; MISSING when there is nothing there."""
    if path.is_file():
        sha = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
        return sha.hexdigest()
    if path.is_dir():
        sha = hashlib.sha256()
        for child in sorted(p for p in path.rglob(pattern) if p.is_file()):
            sha.update(str(child.relative_to(path)).encode() + b"\0")
            sha.update(file_digest(child).encode())
        return sha.hexdigest()
    return MISSING
