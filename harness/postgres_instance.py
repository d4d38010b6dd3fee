"""A private PostgreSQL server for tests that stop and restart their database.

`private_postgres()` makes a data directory with `initdb` in a temporary directory of its
own, starts the server with `pg_ctl -w` on a free port of 127.0.0.1 (its Unix socket in
that directory too), and yields a `PostgresInstance`: `.url`, `.stop()` (the server goes
away, its data stays), `.start()` (the same port and data again: a restart). On leaving
the `with`, whatever happened (an error, Ctrl-C), the server is stopped and the directory
removed: it never outlives the test that started it, and never touches the machine's
own server.

initdb and postgres refuse to run as root: as root, they run as the `postgres` OS user
(`runuser`), who then owns the directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream_processor.output.database import CHECKPOINTS_TABLE, DatabaseOutput

log = logging.getLogger(__name__)

POSTGRES_BIN = Path(os.environ.get("STREAM_PROCESSOR_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"  # who runs the server when we are root
DB_USER = "postgres"
INITDB_TIMEOUT_S = 120
PG_CTL_TIMEOUT_S = 60  # pg_ctl -w waits this long for the server to start or stop
START_ATTEMPTS = 3


class PostgresInstanceError(RuntimeError):
    """The private server could not be made, started or stopped."""


def why_unavailable() -> str | None:
    """Why no private server can be started here (None: it can)."""
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (POSTGRES_BIN / binary).exists():
            return f"{POSTGRES_BIN / binary} is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root, and there is no {OS_USER!r} OS user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root, and runuser is not installed"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _reachable_by_others(path: Path) -> bool:
    """Whether another OS user (the server's) can reach `path`: every directory above it searchable."""
    return all(parent.stat().st_mode & 0o001 for parent in [path, *path.parents])


class PostgresInstance:
    """One private server: its directory, its port, and whether it runs."""

    def __init__(self, directory: Path, port: int, password: str | None = None) -> None:
        self.directory = directory
        self.port = port
        self.password = password  # None: trust authentication, any password (or none) is let in
        self.data = directory / "data"
        self.log_path = directory / "server.log"
        self.running = False

    @property
    def url(self) -> str:
        user = DB_USER if self.password is None else f"{DB_USER}:{self.password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def table_url(self, table: str) -> str:
        return f"{self.url}?table={table}"

    # -- the server's life ---------------------------------------------------------------

    def initdb(self) -> None:
        auth = ["-A", "trust"]
        if self.password is not None:  # scram-sha-256: a wrong password is refused
            password_file = self.directory / "password"
            password_file.write_text(self.password + "\n")
            if os.geteuid() == 0:
                user = pwd.getpwnam(OS_USER)
                os.chown(password_file, user.pw_uid, user.pw_gid)
            auth = ["-A", "scram-sha-256", f"--pwfile={password_file}"]
        self._run(
            [str(POSTGRES_BIN / "initdb"), "-D", str(self.data), *auth, "-U", DB_USER, "-E", "UTF8"]
            + ["--locale=C", "--no-sync"],
            timeout=INITDB_TIMEOUT_S,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": "50",
            "shared_buffers": "'16MB'",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{name} = {value}\n" for name, value in settings.items()))
        self.set_port(self.port)

    def set_port(self, port: int) -> None:
        """Listen on `port` from the next start (the last setting in postgresql.conf wins)."""
        self.port = port
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {port}\n")

    def start(self) -> PostgresInstance:
        """Start it (again: the same port and data); return once it accepts connections."""
        if self.running:
            return self
        self._pg_ctl("start", "-l", str(self.log_path))
        self.running = True
        log.info("private PostgreSQL up at %s", self.url)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop it (`fast`: sessions are ended, a clean shutdown; `immediate`: as a crash,
        recovered at the next start). Its data stays for `start()`."""
        if not self.running:
            return
        pid = self._postmaster_pid()
        try:
            self._pg_ctl("stop", "-m", mode)
        finally:
            self.running = self._postmaster_pid() is not None
        if pid is not None and not self.running:
            _wait_for_exit(pid)  # pg_ctl returns once the pid file is gone: the process follows at once
        if self.running:
            raise PostgresInstanceError(f"the private PostgreSQL at port {self.port} did not stop")

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_s)  # the length of the outage, not a synchronisation
        self.start()

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def destroy(self) -> None:
        """Stop it whatever its state (killing the postmaster if pg_ctl cannot), remove the directory."""
        try:
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(PostgresInstanceError, subprocess.TimeoutExpired):
                    self._pg_ctl("stop", "-m", "immediate", check=False)
                self._kill_postmaster()
                _wait_for_exit(pid)
        finally:
            self.running = False
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def _pg_ctl(self, action: str, *options: str, check: bool = True) -> None:
        command = [str(POSTGRES_BIN / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", str(PG_CTL_TIMEOUT_S)]
        self._run([*command, *options], timeout=PG_CTL_TIMEOUT_S + 15, check=check)

    def _run(self, command: list[str], timeout: float, check: bool = True) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", OS_USER, "--", *command]
        # No pipe the server could inherit: pg_ctl's output goes to a file, the server's to its log.
        with open(self.directory / "commands.log", "ab") as output:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=self.directory,
                env=_server_environment(),
            )
        if check and done.returncode != 0:
            raise PostgresInstanceError(f"{' '.join(command[-8:])} failed (exit {done.returncode}):\n{self._tail()}")

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's (we are not root)
            return pid
        return pid

    def _kill_postmaster(self) -> None:
        """The last resort: SIGKILL the postmaster (its backends exit when it is gone)."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        _wait_for_exit(pid)

    def _tail(self, chars: int = 2000) -> str:
        text = ""
        for path in (self.directory / "commands.log", self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")[-chars:]
        return text


def _wait_for_exit(pid: int, timeout_s: float = 10.0) -> None:
    """Until process `pid` is gone (or a zombie another parent has yet to reap)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)


def _server_environment() -> dict[str, str]:
    """A clean environment: no PG* variable of the caller's, a locale initdb accepts."""
    keep = ("PATH", "TZ")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


@contextmanager
def private_postgres(base: Path | None = None, password: str | None = None) -> Iterator[PostgresInstance]:
    """A private PostgreSQL, started; stopped and removed on leaving, however that happens.
    With `password`, its user `postgres` needs that password (scram-sha-256); else any is let in."""
    why = why_unavailable()
    if why is not None:
        raise PostgresInstanceError(why)
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    if os.geteuid() == 0 and base is None and not _reachable_by_others(root):
        root = Path("/tmp")  # the server's OS user must reach its directory
    directory = Path(tempfile.mkdtemp(prefix="stream-processor-pg-", dir=root))
    instance = PostgresInstance(directory, free_port(), password)
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(OS_USER)
            os.chown(directory, user.pw_uid, user.pw_gid)
        directory.chmod(0o700)
        instance.initdb()
        for attempt in range(START_ATTEMPTS):
            try:
                instance.start()
                break
            except PostgresInstanceError:
                # Another process may have taken the free port meanwhile: try another one.
                if attempt == START_ATTEMPTS - 1 or _port_is_free(instance.port) or instance._postmaster_pid():
                    raise
                instance.set_port(free_port())
        yield instance
    finally:
        instance.destroy()


def drop_output_table(url: str, table: str, schema: str = "public") -> None:
    """Drop a results table and its checkpoint row, if they exist: on a fresh database the
    checkpoints table is only there once some run has written to PostgreSQL."""
    from psycopg import sql

    output = DatabaseOutput.parse(f"{url}?table={schema}.{table}")
    with output.connect(autocommit=True) as connection:
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(output.results()))
        found = connection.execute("SELECT to_regclass(%s)", (f"{schema}.{CHECKPOINTS_TABLE}",)).fetchone()
        if found is not None and found[0] is not None:
            delete = sql.SQL("DELETE FROM {} WHERE output_table = %s").format(output.checkpoints())
            connection.execute(delete, (output.qualified,))
