"""A real, throw-away PostgreSQL server for the tests and ``make bench`` (figure E).

Started in a temporary directory, listening only on a Unix socket in that directory (no TCP
port at all), stopped and removed afterwards; :meth:`PostgresServer.database` hands out a
fresh database. The server refuses to run as root, so as root it runs as the ``postgres``
user that Debian's ``postgresql`` package creates (``runuser``). ``make test`` installs the
package when it is missing. The tests run it with ``fsync`` off (a killed *process* loses
nothing without it); the benchmark with the server's durable defaults.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg

from gateway._internal.secret import Secret

SUPERUSER = "postgres"
START_TIMEOUT = 60


def _bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` live (Debian keeps them off ``PATH``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL's server is not installed (initdb not found): `make test` installs it, "
        "or run `apt-get install -y postgresql`"
    )


class PostgresServer:
    """A throw-away PostgreSQL cluster; :meth:`database` hands out fresh databases."""

    def __init__(self, bindir: Path, root: Path, run_as: list[str], *, durable: bool) -> None:
        self.durable = durable
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self._run_as = run_as
        self._serial = itertools.count(1)

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._run_as, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=START_TIMEOUT,
        )

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{self.socket_dir}'",
                *(
                    ()
                    if self.durable
                    else (
                        "-c fsync=off",  # a killed *process* loses nothing without it
                        "-c full_page_writes=off",
                    )
                ),
                "-c max_connections=200",
                "-c shared_buffers=32MB",
            ]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT),
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def dsn(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL (what a federation file and ``--database`` take), over the
        Unix socket in the server's directory."""
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir), safe='')}"

    def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._serial)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @contextlib.contextmanager
    def database(self) -> Iterator[Secret]:
        """A new empty database for one test (dropped after it); its DSN."""
        name = self.create_database()
        try:
            yield Secret(self.dsn(name))
        finally:
            self.drop_database(name)


@contextlib.contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a server in a new temporary directory; stop it and remove the directory after.
    ``durable``: the server's own ``fsync`` (benchmarks), else off (tests)."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="tongban-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses root: run it as the package's postgres user
        user = pwd.getpwnam(SUPERUSER)
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", SUPERUSER, "--"]
    server = PostgresServer(bindir, root, run_as, durable=durable)
    try:
        for sub in (server.socket_dir,):
            sub.mkdir()
            if run_as:
                user = pwd.getpwnam(SUPERUSER)
                os.chown(sub, user.pw_uid, user.pw_gid)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
