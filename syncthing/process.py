"""A `syncthing serve` that twinsync owns: for tests, the demo and `init --managed`.

It listens only on 127.0.0.1 and never contacts discovery servers, relays or upgrade
servers, because its config is made loopback-only before its first start. Its command lines
depend on the installed version (syncthing/version.py); the program is `syncthing` on PATH
unless $TWINSYNC_SYNCTHING names another (CI runs the integration tests against two).
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from syncthing.client import SyncthingClient
from syncthing.configxml import GuiEndpoint, make_loopback_only, read_gui_endpoint
from syncthing.errors import (SyncthingBusyError, SyncthingConfigError, SyncthingError,
                              SyncthingUnavailable)
from syncthing.version import (LOG_MAX_BYTES, LOG_MAX_OLD_FILES, SyncthingVersion, generate_argv,
                               parse_version, serve_argv, version_argvs)

PID_FILE = "syncthing.pid"
#: Seconds a start waits for a 2.x Syncthing migrating a 1.x database (a large one takes long).
MIGRATION_TIMEOUT = 3600.0
LOG_FILE = "syncthing.log"
#: How long `kill` waits for Syncthing itself to be gone after SIGKILL.
KILL_WAIT_S = 10.0


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago, below the range the kernel takes the
    source ports of outgoing connections from. A port from bind(0) is in that range, so an
    HTTP client (ours, or another Syncthing's) could take it as its source port before
    Syncthing binds it, and Syncthing then exits with "address already in use"."""
    first = _ephemeral_range()[0]
    if first > _LOWEST_PICKED + 1000:
        for _ in range(50):
            port = secrets.choice(range(_LOWEST_PICKED, first))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Ports below this are left to services people configure by hand.
_LOWEST_PICKED = 20000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; other systems pick theirs from 49152 or higher


def find_binary(binary: str | None = None) -> str:
    """The Syncthing program to run: `binary`, else $TWINSYNC_SYNCTHING, else `syncthing` on PATH.

    The variable lets CI (and a user with several Syncthings) pick one without code changes.
    """
    chosen = os.environ.get("TWINSYNC_SYNCTHING") if binary is None else binary
    path = shutil.which(chosen or "syncthing")
    if path:
        return path
    if binary is None and chosen:
        raise SyncthingConfigError(f"TWINSYNC_SYNCTHING names {chosen}, which is not a program "
                                   "that can be run; correct it or unset it to use `syncthing`.")
    raise SyncthingConfigError(
        f"The `{chosen or 'syncthing'}` program is not installed; run install/setup.sh or "
        "`sudo apt-get install syncthing`.")


def binary_version(binary: str | None = None) -> SyncthingVersion:
    """The version of the Syncthing program `find_binary` picks; asked once per program file
    (a package upgrade that replaces the file is asked again)."""
    path = find_binary(binary)
    return _version_of(path, os.stat(path).st_mtime_ns)


@functools.cache
def _version_of(path: str, mtime_ns: int) -> SyncthingVersion:
    failures = []
    for argv in version_argvs(path):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                  env=managed_env(os.environ), stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SyncthingConfigError(f"Cannot run {path} ({exc}); check that it is Syncthing "
                                       "or set TWINSYNC_SYNCTHING to the right program.") from None
        if done.returncode == 0:
            return parse_version(done.stdout)
        failures.append((done.stderr or done.stdout).strip()[-200:])
    raise SyncthingConfigError(f"{path} did not say which version it is ({' / '.join(failures)}); "
                               "check that it is Syncthing or set TWINSYNC_SYNCTHING to the right program.")


#: Syncthing reads its settings from environment variables named ST + capitals (STHOMEDIR,
#: STCONFDIR, STGUIADDRESS, STGUIAPIKEY, STLOGFILE, STMONITORED, ...).
_SYNCTHING_VARIABLE = re.compile(r"ST[A-Z]+")


def managed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a managed Syncthing: none of the user's own Syncthing settings (an
    STHOMEDIR or STGUIADDRESS meant for their Syncthing would point ours at theirs, and
    1.27+/2.x refuse --home next to STCONFDIR), plus ours."""
    env = {k: v for k, v in environ.items() if not _SYNCTHING_VARIABLE.fullmatch(k)}
    env.update(STNODEFAULTFOLDER="1", STNOUPGRADE="1", STNORESTART="1")
    return env


class ManagedSyncthing:
    """One Syncthing home directory and, while started, its process."""

    def __init__(self, home: Path, *, binary: str | None = None,
                 log_max_bytes: int = LOG_MAX_BYTES, log_max_old_files: int = LOG_MAX_OLD_FILES) -> None:
        self.home = Path(home)
        self.binary = binary
        self.log_max_bytes, self.log_max_old_files = log_max_bytes, log_max_old_files
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.home / "config.xml"

    @property
    def endpoint(self) -> GuiEndpoint:
        return read_gui_endpoint(self.config_path)

    def client(self) -> SyncthingClient:
        ep = self.endpoint
        return SyncthingClient(ep.url, ep.api_key, cert=ep.https_cert)

    def generate(self, device_name: str) -> GuiEndpoint:
        """Make keys and a loopback-only config on free ports; never reuses an existing home."""
        if self.config_path.exists():
            raise SyncthingConfigError(f"{self.home} already holds a Syncthing config; "
                                       "start it instead of generating a new one.")
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        binary = find_binary(self.binary)
        done = subprocess.run(generate_argv(binary, self.home, binary_version(binary)),
                              capture_output=True, text=True, env=managed_env(os.environ),
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SyncthingConfigError(f"`syncthing generate` failed in {self.home}: "
                                       f"{(done.stderr or done.stdout).strip()[-300:]}")
        make_loopback_only(self.config_path, device_name=device_name, gui_port=free_port(),
                           listen_port=free_port(), api_key=secrets.token_urlsafe(24))
        return self.endpoint

    def start(self, *, detach: bool = False, timeout: float = 30.0,
              migration_timeout: float = MIGRATION_TIMEOUT,
              on_busy: Callable[[str], None] | None = None) -> int:
        """Start `syncthing serve` and wait until its API answers; returns the pid.

        A 2.x Syncthing that migrates its database first gets `migration_timeout` instead of
        `timeout`, and `on_busy` hears once why the start takes long: stopping it mid-migration
        would only make the next start migrate again.

        With `detach` the process outlives us (its own session, pid file in the home) so
        `twinsync init --managed` can leave a running node behind. Syncthing runs under its own
        monitor process, the one that rotates its log; the pid is the monitor's, which passes
        SIGTERM on to Syncthing.
        """
        if not self.config_path.exists():
            raise SyncthingConfigError(f"{self.home} has no Syncthing config; run `twinsync init --managed` first.")
        running = self.running_pid()
        if running:
            raise SyncthingConfigError(f"Syncthing for {self.home} is already running (pid {running}).")
        binary = find_binary(self.binary)
        argv = serve_argv(binary, self.home, binary_version(binary), log_file=self.home / LOG_FILE,
                          log_max_bytes=self.log_max_bytes, log_max_old_files=self.log_max_old_files)
        # The monitor writes Syncthing's output to stdout and to the rotated log file; its own
        # stderr (a flag it rejects) is appended to that file too.
        errors = open(self.home / LOG_FILE, "ab")
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                env=managed_env(os.environ), start_new_session=detach)
        finally:
            errors.close()
        (self.home / PID_FILE).write_text(f"{self._proc.pid}\n")
        try:
            self.wait_ready(timeout, migration_timeout=migration_timeout, on_busy=on_busy)
        except SyncthingError:
            self.stop()
            raise
        return self._proc.pid

    def wait_ready(self, timeout: float = 30.0, *, migration_timeout: float = MIGRATION_TIMEOUT,
                   on_busy: Callable[[str], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        migrating = False
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise SyncthingUnavailable(
                    f"Syncthing in {self.home} exited at start (code {self._proc.returncode}); "
                    f"see {self.home / LOG_FILE}.")
            # A new client each round: Syncthing writes its HTTPS certificate on its first
            # start, after this wait began.
            with self.client() as client:
                client.timeout = 2.0
                try:
                    if client.ping():
                        return
                except SyncthingBusyError as exc:
                    if not migrating:
                        migrating = True
                        deadline = max(deadline, time.monotonic() + migration_timeout)
                        if on_busy is not None:
                            on_busy(str(exc))
                except SyncthingUnavailable:
                    pass
            if time.monotonic() > deadline:
                what = "finish migrating its database" if migrating else "answer"
                raise SyncthingUnavailable(f"Syncthing in {self.home} did not {what} within "
                                           f"{migration_timeout if migrating else timeout:.0f} s; "
                                           f"see {self.home / LOG_FILE}.")
            time.sleep(0.1)

    def running_pid(self) -> int | None:
        """The pid from the pid file when that process is still alive."""
        try:
            pid = int((self.home / PID_FILE).read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the monitor (it stops Syncthing and exits), then SIGKILL to both after
        `grace` seconds; removes the pid file."""
        pid = self._proc.pid if self._proc is not None else self.running_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if self._proc is not None:
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                _kill_tree(pid)
                self._proc.wait()
            self._proc = None
        else:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                _kill_tree(pid)
        (self.home / PID_FILE).unlink(missing_ok=True)


    def kill(self) -> None:
        """SIGKILL the monitor and the Syncthing under it at once, as a crash or a power cut
        does. Killing the monitor's pid alone is no crash: the Syncthing it runs goes on
        serving, orphaned. Returns once Syncthing itself is gone: it is not our child, and a
        start while it still holds its database lock would fail."""
        pid = self._proc.pid if self._proc is not None else self.running_pid()
        if pid is None:
            return
        served_by = _kill_tree(pid)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        deadline = time.monotonic() + KILL_WAIT_S
        while any(map(_alive, served_by)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.home / PID_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL the monitor and the Syncthing under it; returns the Syncthing pids. Not by
    process group: Syncthing moves itself into its own group when it lowers its priority
    (lib/osutil/lowprio_linux.go)."""
    children = _children(pid)
    for child in children:
        _kill(child)
    _kill(pid)
    return children


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ..."; comm may hold spaces, so split after its ")".
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we looked
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
