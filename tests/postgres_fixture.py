"""A throwaway PostgreSQL server for the lineage tests.

`postgres_server()` finds `initdb`/`pg_ctl` (/usr/lib/postgresql/*/bin or PATH), creates a
cluster in a temporary folder owned by the `postgres` OS user when we run as root (PostgreSQL
refuses to run as root), starts it on 127.0.0.1 on a free port with its unix socket inside the
temporary folder, and stops and deletes it at interpreter exit. One server per test process;
each test gets its own database from `new_database()`.

When PostgreSQL or psycopg is missing, `postgres_unavailable()` says why and tests skip.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

_server: PostgresServer | None = None
_failure: str | None = None


def _bin_dir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def postgres_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    if _bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install -y postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None and shutil.which("su") is None:
        return "running as root without runuser/su to start PostgreSQL as another user"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` OS user to run the server"
    return _failure


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin_dir: Path
    as_user: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        if self.as_user is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.as_user, "--", *args]
        import shlex

        return ["su", self.as_user, "-c", shlex.join(args)]

    def start(self) -> None:
        data = self.root / "data"
        sockets = self.root / "sockets"
        sockets.mkdir()
        if self.as_user is not None:
            import pwd

            user = pwd.getpwnam(self.as_user)
            for path in (self.root, sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            **run,
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {sockets} -F -c max_connections=100"
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ),
            **run,
        )

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"kiln_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def postgres_server() -> PostgresServer:
    """The test process's server, started on first use (raises RuntimeError if it cannot)."""
    global _server, _failure
    if _server is not None:
        return _server
    reason = postgres_unavailable()
    if reason:
        raise RuntimeError(reason)
    bin_dir = _bin_dir()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="kiln-pg-"))
    server = PostgresServer(
        root=root,
        port=_free_port(),
        bin_dir=bin_dir,
        as_user="postgres" if os.geteuid() == 0 else None,
    )
    try:
        server.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        output = getattr(exc, "stderr", "") or ""
        log = root / "server.log"
        if log.exists():
            output += log.read_text()[-2000:]
        _failure = f"could not start PostgreSQL: {exc} {output}".strip()
        server.stop()
        raise RuntimeError(_failure) from exc
    _server = server
    atexit.register(server.stop)
    return server
