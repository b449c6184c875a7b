"""A private PostgreSQL cluster for tests and benches: Debian's `postgresql` package (installed by
scripts/test.sh), initdb in a temporary directory, the server listening only on 127.0.0.1 on a
free port and on a unix socket in that directory, stopped (and the directory removed) at the end.

PostgreSQL refuses to run as root: under root the cluster runs as the `postgres` user the Debian
package creates, and its directory belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

# The role gateways log in as, over TCP with a password (scram-sha-256); the superuser
# `postgres` is reached only through the unix socket (trust), by the tests themselves.
ROLE = "relay"
PASSWORD = "pg-Secret/pass@word+1"  # characters a URL must quote: the masking must see those too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path:
    """The newest installed server's binaries (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL is missing (Debian's postgresql): ./scripts/test.sh installs it")


class PostgresCluster:
    """initdb + postgres on a free loopback port; start() and stop() can be called again (the
    data stays), so a test can take the server away and bring it back."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None
        pwfile = self.dir / "pw"
        pwfile.write_text("unused-superuser-password\n")
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8"]
            + ["--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"]
            + ["--pwfile", str(pwfile)],
            check=True,
            capture_output=True,
            **self._run_as,
        )
        pwfile.unlink()
        self.start()
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the server's own output, closed with it
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
            + ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"]
            # A throwaway cluster: no fsync (speed), enough connections for several gateways.
            + ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=log,
            stderr=subprocess.STDOUT,
            **self._run_as,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log.read_text(errors='replace')}")
            try:
                with self.admin():
                    return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"postgres did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, the data stays for the next start()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """A superuser connection over the unix socket, autocommit."""
        return psycopg.connect(
            host=str(self.dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    def new_database(self) -> str:
        """A fresh database owned by the gateways' role; returns its postgresql:// URL."""
        name = f"relay_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, dbname: str, password: str = PASSWORD) -> str:
        quoted = password.replace("%", "%25").replace("/", "%2F").replace("@", "%40")
        quoted = quoted.replace("+", "%2B").replace(":", "%3A")
        return f"postgresql://{ROLE}:{quoted}@127.0.0.1:{self.port}/{dbname}"

    def query(self, dbname: str, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; its rows (none for a statement without)."""
        with self.admin(dbname) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return list(cursor) if cursor.description is not None else []
