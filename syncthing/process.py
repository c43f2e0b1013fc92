"""A `syncthing serve` that twinsync owns: for tests, the demo and `init --managed`.

It listens only on 127.0.0.1 and never contacts discovery servers, relays or upgrade
servers, because its config is made loopback-only before its first start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from syncthing.client import SyncthingClient
from syncthing.configxml import GuiEndpoint, make_loopback_only, read_gui_endpoint
from syncthing.errors import SyncthingConfigError, SyncthingError, SyncthingUnavailable

PID_FILE = "syncthing.pid"
LOG_FILE = "syncthing.log"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (good enough on a test machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(binary: str = "syncthing") -> str:
    path = shutil.which(binary)
    if not path:
        raise SyncthingConfigError(
            f"The `{binary}` program is not installed; run install/setup.sh or "
            "`sudo apt-get install syncthing`.")
    return path


class ManagedSyncthing:
    """One Syncthing home directory and, while started, its process."""

    def __init__(self, home: Path, *, binary: str = "syncthing") -> None:
        self.home = Path(home)
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.home / "config.xml"

    @property
    def endpoint(self) -> GuiEndpoint:
        return read_gui_endpoint(self.config_path)

    def client(self) -> SyncthingClient:
        ep = self.endpoint
        return SyncthingClient(ep.url, ep.api_key)

    def generate(self, device_name: str) -> GuiEndpoint:
        """Make keys and a loopback-only config on free ports; never reuses an existing home."""
        if self.config_path.exists():
            raise SyncthingConfigError(f"{self.home} already holds a Syncthing config; "
                                       "start it instead of generating a new one.")
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        done = subprocess.run(
            [find_binary(self.binary), "generate", f"--home={self.home}", "--no-default-folder",
             "--skip-port-probing"],
            capture_output=True, text=True, env=self._env())
        if done.returncode != 0:
            raise SyncthingConfigError(f"`syncthing generate` failed in {self.home}: "
                                       f"{(done.stderr or done.stdout).strip()[-300:]}")
        make_loopback_only(self.config_path, device_name=device_name, gui_port=free_port(),
                           listen_port=free_port(), api_key=secrets.token_urlsafe(24))
        return self.endpoint

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # STMONITORED: run as one process, so a signal reaches Syncthing itself, not a monitor.
        env.update(STNODEFAULTFOLDER="1", STNOUPGRADE="1", STNORESTART="1", STMONITORED="1")
        return env

    def start(self, *, detach: bool = False, timeout: float = 30.0) -> int:
        """Start `syncthing serve` and wait until its API answers; returns the pid.

        With `detach` the process outlives us (its own session, pid file in the home) so
        `twinsync init --managed` can leave a running node behind.
        """
        if not self.config_path.exists():
            raise SyncthingConfigError(f"{self.home} has no Syncthing config; run `twinsync init --managed` first.")
        running = self.running_pid()
        if running:
            raise SyncthingConfigError(f"Syncthing for {self.home} is already running (pid {running}).")
        log = open(self.home / LOG_FILE, "ab")
        try:
            self._proc = subprocess.Popen(
                [find_binary(self.binary), "serve", f"--home={self.home}", "--no-browser",
                 "--no-restart", "--no-upgrade", "--logflags=3"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                start_new_session=detach)
        finally:
            log.close()
        (self.home / PID_FILE).write_text(f"{self._proc.pid}\n")
        try:
            self.wait_ready(timeout)
        except SyncthingError:
            self.stop()
            raise
        return self._proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            client.timeout = 2.0
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise SyncthingUnavailable(
                        f"Syncthing in {self.home} exited at start (code {self._proc.returncode}); "
                        f"see {self.home / LOG_FILE}.")
                try:
                    if client.ping():
                        return
                except SyncthingUnavailable:
                    pass
                if time.monotonic() > deadline:
                    raise SyncthingUnavailable(f"Syncthing in {self.home} did not answer within "
                                               f"{timeout:.0f} s; see {self.home / LOG_FILE}.")
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
        """SIGTERM, then SIGKILL after `grace` seconds; removes the pid file."""
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
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        else:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        (self.home / PID_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
