"""A real PostgreSQL server of the tests' own: ``initdb`` + ``pg_ctl`` in a temporary directory, on loopback.

PostgreSQL refuses to run as root and CI runs as root, so under root the server runs as an unprivileged system
user (``postgres`` where Debian's package created it, otherwise ``sms-mcp-pg``, created here with ``useradd
--system``) through ``setpriv``. It listens on 127.0.0.1 on a free port and on a Unix socket inside its own
directory, with password (SCRAM) authentication, so the URLs the tests use are the shape a deployment uses.

The server can be stopped and started again on the same port (``stop()``, ``start()``, ``restart()``) for the
"PostgreSQL is down" tests. Durability settings (fsync) are off: the tests kill processes, not the machine.

Where the binaries are looked for: ``SMS_MCP_TEST_PG_BINDIR``, ``pg_config --bindir``, the newest
``/usr/lib/postgresql/*/bin``, then ``PATH``. ``.ci/run`` installs Debian's ``postgresql`` where none is found.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SYSTEM_USER = "sms-mcp-pg"
SUPERUSER = "sms_mcp"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or PostgresUnavailable."""
    candidates: list[str] = []
    if os.environ.get("SMS_MCP_TEST_PG_BINDIR"):
        candidates.append(os.environ["SMS_MCP_TEST_PG_BINDIR"])
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(out.stdout.strip())

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path)) or (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        if candidate and all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; install Debian's `postgresql` or set "
        "SMS_MCP_TEST_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (created if missing); None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("SMS_MCP_TEST_PG_USER"), "postgres", SYSTEM_USER):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
         SYSTEM_USER],
        check=True, capture_output=True, timeout=60,
    )
    return pwd.getpwnam(SYSTEM_USER)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory. Use as a context manager, or ``start()``/``close()``."""

    def __init__(self, *, bindir: Path | None = None, max_connections: int = 200) -> None:
        self.bindir = bindir or find_bindir()
        self.user = _run_as_user()
        self.port = _free_port()
        self.password = secrets.token_urlsafe(18)
        self.root = Path(tempfile.mkdtemp(prefix="sms-mcp-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.max_connections = max_connections
        self._initialised = False
        self._databases = 0
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    # ------------------------------------------------------------------ processes
    def _command(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups",
                "--", *args]

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC", "TZ": "UTC"}
        result = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout, env=env,
                                cwd=self.root, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
        return result

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        pwfile.chmod(0o600)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        pwfile.unlink()
        self.sockets.mkdir()
        if self.user is not None:
            os.chown(self.sockets, self.user.pw_uid, self.user.pw_gid)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# sms-mcp tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                f"max_connections = {self.max_connections}\n"
                "shared_buffers = 32MB\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "timezone = 'UTC'\n"
                "log_min_messages = warning\n"
            )
        self._initialised = True

    def start(self) -> PostgresServer:
        """Start (initialising on the first call) and wait until it accepts connections."""
        if not self._initialised:
            self._initdb()
        self._run(str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "120", "-s")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (disconnect clients, clean shut-down) or ``immediate`` (like a crash)."""
        self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "-s")

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once (the database process crashing)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        for victim in [*self._children(pid), pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (self._alive(pid) or self._listening()):
            time.sleep(0.05)
        # A crash leaves its lock files behind; a killed postmaster that nobody has reaped yet still "exists"
        # for the next postmaster's liveness check, so remove them as an operator would after a crash.
        for stale in [self.data / "postmaster.pid", *self.sockets.glob(".s.PGSQL.*")]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    @staticmethod
    def _children(pid: int) -> list[int]:
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(stat, encoding="ascii", errors="replace") as f:
                    if int(f.read().rsplit(")", 1)[-1].split()[1]) == pid:
                        children.append(int(stat.split("/")[2]))
        return children

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and self._alive(pid)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
        except OSError:
            return False

    def _listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def close(self) -> None:
        if self._initialised and self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ databases
    def url(self, database: str = "postgres") -> str:
        """A libpq URL over TCP loopback (what ``SMS_MCP_LEDGER_URL`` takes)."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """The same database over the Unix socket in the server's directory."""
        return f"postgresql://{SUPERUSER}:{self.password}@/{database}?host={self.sockets}&port={self.port}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL. Each test that needs isolation takes its own."""
        import psycopg
        from psycopg import sql

        self._databases += 1
        name = name or f"t{os.getpid()}_{self._databases}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=30) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def psql(self, database: str, query: str) -> str:
        """Run one query with the server's own ``psql`` (an independent client); returns its unaligned output."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query, self.url(database)],
            capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL,
        )
        return result.stdout.strip()


@contextlib.contextmanager
def postgres_for_tests(**kwargs: object) -> Iterator[PostgresServer]:
    """A started server for a fixture, removed afterwards. Where the machine has no PostgreSQL binaries the test
    is skipped, except under CI (``CI`` set), where that is a failure: ``.ci/run`` installs them."""
    import pytest

    try:
        server = PostgresServer(**kwargs)  # type: ignore[arg-type]
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI must run the PostgreSQL tests: {exc}")
        pytest.skip(str(exc))
    with server:
        yield server
