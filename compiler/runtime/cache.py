"""Cache keys and the content-addressed artifact store.

Layout under the store root (an fsspec URL; default `.kiln/` beside the notebook):

    artifacts/<xxh3-128>      one output value, pickled with cloudpickle (dtypes by value)
    cache/<cache_key>.json    manifest: output name -> digest, captured cell outputs, duration

Every write goes to a temporary name in the same folder and is then renamed (moved), so a
reader never sees half a file. Artifacts are written by the worker that computed the value, so
outputs never travel to the client; manifests are written by the client once a task succeeded,
or, for a task whose large outputs are written after it returned, by its worker once they are
on disk (store_writes.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import mmap
import os
import pickle
import struct
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import cloudpickle
import xxhash

from compiler.model.hashing import MISSING, digest, file_digest
from compiler.model.validation import check_digest, is_digest

_CHUNK = 8 << 20  # large reads: checking a 500 MB artifact is 60 reads, not 500
_TEMP_TOKEN = uuid.uuid4().hex[:12]
_TEMP_COUNTER = itertools.count()


def cache_key(
    task_version: str,
    parameter_values: Mapping[str, Any],
    upstream_keys: Iterable[str],
    dataset_digests: Mapping[str, str],
) -> str:
    """sha256 over everything that decides a task's outputs."""
    return digest(
        {
            "version": task_version,
            "parameters": dict(parameter_values),
            "upstream": list(upstream_keys),
            "datasets": dict(dataset_digests),
        }
    )


def dataset_digests(reads: Iterable[str], notebook_dir: Path) -> dict[str, str]:
    return {rel: file_digest(notebook_dir / rel) for rel in reads}


def file_fingerprint(path: Path) -> str:
    """Size and modification time of a file, or of each file in a folder: enough to see that a
    file a task wrote was deleted or rewritten since, without reading it (a task's written
    files are often its largest ones, checked at every plan)."""
    try:
        if path.is_file():
            stat = path.stat()
            return f"{stat.st_size}:{stat.st_mtime_ns}"
        if path.is_dir():
            digest = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                stat = child.stat()
                digest.update(
                    f"{child.relative_to(path)}\0{stat.st_size}:{stat.st_mtime_ns}\0".encode()
                )
            return digest.hexdigest()
    except OSError:
        pass
    return MISSING


def written_file_fingerprints(writes: Iterable[str], folder: Path) -> dict[str, str]:
    """Fingerprints of the files a task writes (its spec's datasets.writes), relative to the
    folder tasks run in; stored in the task's cache manifest."""
    return {rel: file_fingerprint(folder / rel) for rel in writes}


def changed_written_files(manifest: Mapping[str, Any], folder: Path) -> list[str]:
    """Files the cached run wrote that are missing or changed now: the task must run again
    (its point may be the file itself). Manifests written before this check have none."""
    recorded = manifest.get("writes") or {}
    return [
        rel
        for rel, fingerprint in recorded.items()
        if fingerprint == MISSING or file_fingerprint(folder / rel) != fingerprint
    ]


def local_module_paths(imports: Iterable[str], folder: Path) -> dict[str, Path]:
    """The imported modules that live in `folder` (a notebook's): name -> `NAME.py`, or the
    package folder `NAME/` (with an `__init__.py`). Installed packages are not there."""
    found: dict[str, Path] = {}
    for name in imports:
        if (folder / f"{name}.py").is_file():
            found[name] = folder / f"{name}.py"
        elif (folder / name / "__init__.py").is_file():
            found[name] = folder / name
    return found


def local_module_digests(imports: Iterable[str], notebook_dir: Path) -> dict[str, str]:
    """Digests of the imported modules that live beside the notebook: editing one changes the
    cache keys of the tasks that import it (installed packages change with their version)."""
    # A package counts by its sources only: __pycache__ changes whenever Python recompiles.
    return {
        f"module:{name}": file_digest(path, "*.py")
        for name, path in local_module_paths(imports, notebook_dir).items()
    }


def _artifact_hasher(digest: str | None = None) -> Any:
    """The hash that names artifacts: xxh3-128 (xxhash). An artifact's name only has to tell
    contents apart and catch damage, not resist an attacker, and xxh3 runs at memory speed
    (200 MB: 0.04 s here against sha256's 0.49 s), which is what a large array's cache write
    and its check on a hit cost. Names of 64 hex digits are sha256, from stores written before."""
    if digest is not None and len(digest) == 64:
        return hashlib.sha256()
    return xxhash.xxh3_128()


class _HashingWriter:
    """File wrapper that hashes what is written, so a value is pickled and hashed in one pass
    (pickle protocol 5 hands large buffers such as an array's data to `write` as they are, with
    no copy). Without a file it only hashes: the name a value will have in the store."""

    def __init__(self, file: IO[bytes] | None):
        self.file = file
        self.digest = _artifact_hasher()
        self.size = 0

    def write(self, data: Any) -> int:
        self.digest.update(data)
        n = len(memoryview(data).cast("B"))
        self.size += n
        return self.file.write(data) if self.file is not None else n


class ValueChangedWhileStored(RuntimeError):
    """A value written after its task returned no longer hashes to the digest it had then: a
    later task on the worker changed it in place meanwhile. Nothing is published."""


class _ArtifactPickler(cloudpickle.Pickler):
    """cloudpickle, with plain numpy dtypes written by value so equal values pickle equally.

    pickle memoizes by object identity: an array fresh from a computation carries numpy's
    shared dtype singleton, one that came through pickle (another worker, the artifact store)
    an equal private copy. Two equal models then pickled to different bytes (a memo reference
    against a second dtype), and the same run reproduced elsewhere got other digests. A
    persistent id is an int, which pickle never memoizes.
    """

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj).__module__ != "numpy.dtypes":
            return None
        if obj.fields is not None or obj.subdtype is not None or obj.metadata is not None:
            return None  # structured or annotated: pickled as usual
        return int.from_bytes(obj.str.encode("ascii"), "big")


class _ArtifactUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        numpy = sys.modules.get("numpy") or __import__("numpy")
        return numpy.dtype(pid.to_bytes((pid.bit_length() + 7) // 8, "big").decode("ascii"))


class _Sink:
    """A file as `_write_artifact` writes it, without hashing (`put_value_as` hashes the file
    afterwards, which also catches a value changed while it was written)."""

    def __init__(self, file: IO[bytes]):
        self.file = file

    def write(self, data: Any) -> int:
        return self.file.write(data)


_OOB_MAGIC = b"KILNOOB1"
_OOB_ALIGN = 64  # buffers start on 64-byte boundaries, as numpy likes its data


def _write_artifact(writer: _HashingWriter | _Sink, value: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _ArtifactPickler(stream, protocol=5, buffer_callback=buffers.append).dump(value)
    if not buffers:
        writer.write(stream.getbuffer())
        return
    writer.write(stream.getbuffer())
    offset = stream.tell()
    places = []
    for buffer in buffers:
        raw = buffer.raw()
        pad = -offset % _OOB_ALIGN
        if pad:
            writer.write(b"\0" * pad)
            offset += pad
        writer.write(raw)
        places.append([offset, raw.nbytes])
        offset += raw.nbytes
    trailer = json.dumps({"pickle": stream.tell(), "buffers": places}).encode()
    writer.write(trailer)
    writer.write(struct.pack("<Q", len(trailer)) + _OOB_MAGIC)


def _read_artifact(data: memoryview) -> Any:
    if len(data) < 16 or bytes(data[-8:]) != _OOB_MAGIC:
        return _ArtifactUnpickler(io.BytesIO(data)).load()  # a plain pickle
    (length,) = struct.unpack("<Q", data[-16:-8])
    layout = json.loads(bytes(data[-16 - length : -16]))
    buffers = [data[start : start + size] for start, size in layout["buffers"]]
    return _ArtifactUnpickler(io.BytesIO(data[: layout["pickle"]]), buffers=buffers).load()


class ArtifactStore:
    """Content-addressed output values plus one JSON manifest per cache key."""

    def __init__(self, url: str):
        self.url = url
        self.fs: Any = None
        # A plain path (the default .kiln/) or file:// is a local store: plain os calls, and
        # fsspec is not even imported (its import and URL parsing were ~50 ms of every `kiln
        # run`, a tenth of a run whose tasks are all cached). Any other URL goes through fsspec.
        self.local = ("://" not in url and "::" not in url) or url.startswith("file://")
        if self.local:
            path = url[len("file://") :] if url.startswith("file://") else url
            root = os.path.abspath(os.path.expanduser(path)) if path else os.getcwd()
        else:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/") or "/"
        self._made: set[str] = set()

    @classmethod
    def default_for(cls, notebook_dir: Path) -> ArtifactStore:
        return cls(str(notebook_dir / ".kiln"))

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def artifact_path(self, digest: str) -> str:
        # Digests come from manifests, which are data: '../../victim.txt' must never become a
        # path (it deleted a file outside the store). Raises InvalidValue for anything else.
        return self._path("artifacts", check_digest(digest))

    def manifest_path(self, key: str) -> str:
        return self._path("cache", f"{check_digest(key)}.json")

    def _temp_in(self, folder: str) -> str:
        if folder not in self._made:
            if self.local:
                os.makedirs(folder, exist_ok=True)
            else:
                self.fs.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        # A process-wide random token plus a counter: unique like a uuid4 per file, without
        # an os.urandom call per manifest (measurable with 500 tiny tasks on a busy machine).
        return f"{folder}/.tmp-{_TEMP_TOKEN}-{os.getpid()}-{next(_TEMP_COUNTER)}"

    def _create_temp(self, folder: str) -> tuple[str, Any]:
        """A new temporary file in `folder`, open for writing. The folder is made again when
        it has gone since this store object made it: a warm cluster's workers keep their store
        objects while a user deletes `.kiln/` to clear the cache."""
        temp = self._temp_in(folder)
        try:
            return temp, self._open(temp, "wb")
        except FileNotFoundError:
            self._made.discard(folder)
            temp = self._temp_in(folder)
            return temp, self._open(temp, "wb")

    def _open(self, path: str, mode: str) -> Any:
        return open(path, mode) if self.local else self.fs.open(path, mode)

    def _exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else bool(self.fs.exists(path))

    def _rm(self, path: str) -> None:
        if self.local:
            os.remove(path)
        else:
            self.fs.rm(path)

    def _publish(self, temp: str, final: str) -> None:
        # Local filesystems rename atomically; for object stores mv is copy-then-delete, and the
        # final name only appears once the whole object is there.
        if self.local:
            os.replace(temp, final)
        else:
            self.fs.mv(temp, final)

    def check_writable(self) -> None:
        """Raise OSError (saying which store) unless both store folders take a file: a
        read-only store used to fail only after all the compute, when the first manifest was
        written. Costs one tiny write and delete per folder, once per run."""
        for folder in (self._path("artifacts"), self._path("cache")):
            try:
                probe = self._temp_in(folder)
                with self._open(probe, "wb") as f:
                    f.write(b"kiln")
                self._rm(probe)
            except OSError as exc:
                self._made.discard(folder)
                raise OSError(
                    f"the artifact store {self.url} cannot be written ({folder}: "
                    f"{exc.strerror or exc}); pass a writable --store, or --no-cache"
                ) from exc

    # -- artifacts (written on workers) -------------------------------------------------
    @contextlib.contextmanager
    def _artifact_temp(self) -> Iterator[tuple[str, Any]]:
        """A temporary artifact file open for writing, removed if anything fails before
        `_name_artifact` renamed it."""
        temp, file = self._create_temp(self._path("artifacts"))
        try:
            with file:
                yield temp, file
        except BaseException:
            if self._exists(temp):
                self._rm(temp)
            raise

    def _name_artifact(self, temp: str, digest: str) -> None:
        final = self.artifact_path(digest)
        if self._exists(final):
            self._rm(temp)  # the same content is there already
        else:
            self._publish(temp, final)

    def put_value(self, value: Any) -> tuple[str, int]:
        """Pickle `value` into the store; returns (xxh3-128 digest, stored bytes).

        Pickle protocol 5 with out-of-band buffers: the pickle stream holds the structure and
        large buffers (numpy arrays, pandas blocks) follow it raw, straight from the value's
        memory (no copy into a pickle frame), then a trailer that says where they lie, so a
        reader can map them instead of reading them (`get_value`). A value without such
        buffers is a plain pickle. Hashed while written: one pass over the bytes."""
        with self._artifact_temp() as (temp, f):
            writer = _HashingWriter(f)
            _write_artifact(writer, value)
            f.close()
            digest = writer.digest.hexdigest()
            self._name_artifact(temp, digest)
        return digest, writer.size

    def value_digest(self, value: Any) -> tuple[str, int]:
        """The digest and size `put_value` would give `value`, without writing it: the same
        pickling, into the hash alone (500 MB array: ~0.02 s here, against ~0.15 s to write
        it into the page cache). Lets a worker hand a large value on before it is stored.
        (Hashing the array for this and for its content digest in one pass over it saved
        nothing measurable: xxh3 is bound by compute, not memory, at ~24 GB/s here.)"""
        writer = _HashingWriter(None)
        _write_artifact(writer, value)
        return writer.digest.hexdigest(), writer.size

    def has_artifact(self, digest: str) -> bool:
        return self._exists(self.artifact_path(digest))

    def put_value_as(self, value: Any, digest: str) -> int:
        """Store `value` under `digest`, taken earlier by `value_digest`; returns the bytes
        stored. The written file is hashed again before it gets its name: a value changed in
        place since (or while it was written) raises ValueChangedWhileStored and leaves no
        file, so a published artifact always matches its name. Costs one read of the file
        from the page cache (500 MB: ~0.05 s), paid off the task's path (store_writes.py)."""
        with self._artifact_temp() as (temp, f):
            _write_artifact(_Sink(f), value)
            f.close()
            if not self._exists(temp):
                raise FileNotFoundError(f"{temp} was removed while it was being written")
            if not self._file_hashes_to(temp, digest):
                raise ValueChangedWhileStored(
                    f"the value changed in place while it was being stored (digest {digest})"
                )
            size = os.path.getsize(temp) if self.local else int(self.fs.size(temp))
            self._name_artifact(temp, digest)
        return size

    def get_value(self, digest: str) -> Any:
        """The value, its large buffers mapped from the file (copy-on-write, so arrays stay
        writable) and read only when touched, on local stores."""
        path = self.artifact_path(digest)
        if self.local:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise EOFError(f"artifact {digest} is empty")
                data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
        else:
            with self._open(path, "rb") as f:
                data = memoryview(bytearray(f.read()))
        return _read_artifact(data)

    def artifact_intact(self, digest: str) -> bool:
        """True when the artifact exists and its content still hashes to its name."""
        if not is_digest(digest):
            return False
        return self._file_hashes_to(self.artifact_path(digest), digest)

    def _file_hashes_to(self, path: str, digest: str) -> bool:
        h = _artifact_hasher(digest)
        try:
            with self._open(path, "rb") as f:
                if self.local:
                    chunk = bytearray(_CHUNK)
                    view = memoryview(chunk)
                    while n := f.readinto(chunk):
                        h.update(view[:n])
                else:
                    while block := f.read(_CHUNK):
                        h.update(block)
        except (FileNotFoundError, OSError):
            return False
        return bool(h.hexdigest() == digest)

    # -- manifests (written on the client) ------------------------------------------------
    def read_manifest(self, key: str) -> dict[str, Any] | None:
        try:
            with self._open(self.manifest_path(key), "rb") as f:
                manifest = json.load(f)
        except (FileNotFoundError, OSError, ValueError):  # ValueError: not a key (InvalidValue)
            return None
        return manifest if isinstance(manifest, dict) else None

    def write_manifest(self, key: str, manifest: Mapping[str, Any]) -> None:
        final = self.manifest_path(key)
        temp, file = self._create_temp(self._path("cache"))
        with file as f:
            # Compact: json's C encoder serves only indent=None (the indented form took most
            # of the manifest thread's time, which the end of a 500-task run waited for).
            f.write(json.dumps(manifest, sort_keys=True, default=repr).encode())
        self._publish(temp, final)

    def has_manifest(self, key: str) -> bool:
        return self._exists(self.manifest_path(key))

    def _pending_path(self, key: str) -> str:
        return self._path("cache", f"{check_digest(key)}.pending")

    def mark_pending(self, key: str) -> None:
        """Say that a worker will write the entry for `key` (store_writes.py); the worker
        removes the mark once it has. A mark gone with no entry (the user deleted `.kiln/`)
        tells a waiting run that there is nothing left to wait for."""
        temp, file = self._create_temp(self._path("cache"))
        with file as f:
            f.write(b"{}")
        self._publish(temp, self._pending_path(key))

    def is_pending(self, key: str) -> bool:
        return self._exists(self._pending_path(key))

    def clear_pending(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self._rm(self._pending_path(key))

    def _unstored_path(self, key: str) -> str:
        return self._path("cache", f"{check_digest(key)}.unstored")

    def write_unstored(self, key: str, why: str) -> None:
        """Say why the entry for `key` was not written (store_writes.py: a large output whose
        write failed after its task returned), for the run that waits for it."""
        temp, file = self._create_temp(self._path("cache"))
        with file as f:
            f.write(json.dumps({"error": why}).encode())
        self._publish(temp, self._unstored_path(key))

    def take_unstored(self, key: str) -> str | None:
        """Why the entry for `key` was not written, if a worker said so; the note is removed."""
        path = self._unstored_path(key)
        try:
            with self._open(path, "rb") as f:
                why = str(json.load(f).get("error") or "not stored")
        except (FileNotFoundError, OSError, ValueError, AttributeError):
            return None
        with contextlib.suppress(OSError):
            self._rm(path)
        return why

    def damaged_artifacts(self, manifest: Mapping[str, Any]) -> list[str]:
        """Digests of this manifest's artifacts that are missing or no longer match."""
        outputs = manifest.get("outputs") or {}
        digests = [
            info.get("digest") if isinstance(info, dict) else None for info in outputs.values()
        ]
        return [str(d) for d in digests if not d or not self.artifact_intact(d)]

    def manifest_intact(self, manifest: Mapping[str, Any]) -> bool:
        return not self.damaged_artifacts(manifest)

    def discard_artifacts(self, digests: Iterable[str]) -> None:
        """Remove damaged artifacts, so recomputing the task writes them afresh."""
        for artifact in digests:
            if not is_digest(artifact):
                continue  # not a name this store gave: nothing of ours to remove
            path = self.artifact_path(artifact)
            if self._exists(path):
                self._rm(path)


@functools.lru_cache(maxsize=8)
def store_at(url: str) -> ArtifactStore:
    """One store object per URL and process (workers run many tasks against one store)."""
    return ArtifactStore(url)


def load_outputs(store_url: str, digests: Mapping[str, str]) -> dict[str, Any]:
    """Worker-side: a cached task's outputs, shaped like a task outcome for downstream tasks."""
    store = store_at(store_url)
    return {"values": {name: store.get_value(digest) for name, digest in digests.items()}}
