"""Shared fixtures: real Syncthing processes on 127.0.0.1, node homes made through the CLI,
and guards that fail a test which leaves a child process or a thread behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingError
from syncthing.process import ManagedSyncthing, binary_version, find_binary


def pytest_report_header(config) -> str:
    """Which Syncthing the integration tests run (CI runs two; $TWINSYNC_SYNCTHING picks one)."""
    try:
        return f"syncthing: {binary_version()} ({find_binary()})"
    except SyncthingError as exc:
        return f"syncthing: not usable ({exc})"


def pytest_configure(config) -> None:
    """Tests press Ctrl-C on the processes they start (`demo`, `watch`) by sending SIGINT. A
    pytest started in the background by a script (`pytest ... &`, as .ci/run starts the second
    suite) inherits SIGINT ignored (POSIX: a non-interactive shell's asynchronous commands
    ignore SIGINT and SIGQUIT), every child inherits that in turn, and Python leaves an
    inherited SIG_IGN alone: the child never hears the Ctrl-C. Start children as a terminal
    does, with SIGINT handled (a handler installed here is reset to the default at exec)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _orphans_of_this_run(basetemp: str) -> set[psutil.Process]:
    """Processes working under this run's temp folder that are no longer our children: a
    Syncthing whose monitor was killed goes on serving, reparented to init, and a check of
    our own children alone would never see it."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(basetemp in arg for arg in p.info["cmdline"] or ()):
                found.add(p)
        except (psutil.Error, TypeError):
            continue
    return found


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test that leaves a process or a thread running is a failing test."""
    me = psutil.Process()
    basetemp = str(tmp_path_factory.getbasetemp()) + os.sep
    children_before = {p.pid for p in me.children(recursive=True)} | {p.pid for p in _orphans_of_this_run(basetemp)}
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [p for p in set(me.children(recursive=True)) | _orphans_of_this_run(basetemp)
                if p.pid not in children_before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        if not (left or threads) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        p.kill()
    assert not left, f"test left child processes behind: {[p.cmdline() for p in left]}"
    assert not threads, f"test left threads behind: {threads}"


def run_cli(*args: str, ok: bool = True):
    """Invoke the real CLI in-process; `ok` asserts exit code 0 and shows the output if not."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, f"twinsync {' '.join(map(str, args))} failed:\n{result.output}"
    return result


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.1):
    """Poll with a deadline instead of sleeping; returns the predicate's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stays_false(predicate: Callable[[], object], seconds: float, interval: float = 0.1) -> None:
    """The bounded form of "never": the predicate must not become true for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not predicate(), "a condition that must never hold became true"
        time.sleep(interval)


T = TypeVar("T")
R = TypeVar("R")


def stop_all(stop: Callable[[T], R], processes: list[T]) -> list[R]:
    """Stop them all at once: each stop waits for its own process to exit (Syncthing takes
    seconds to shut down), so one after the other a three-node test spent 12-15 s in teardown."""
    with ThreadPoolExecutor(max(1, len(processes))) as pool:
        return list(pool.map(stop, processes))


@pytest.fixture
def syncthing_factory(tmp_path: Path) -> Iterator[Callable[[str], ManagedSyncthing]]:
    """Start real `syncthing serve` processes, loopback only; all stopped at teardown."""
    started: list[ManagedSyncthing] = []

    def start(name: str) -> ManagedSyncthing:
        st = ManagedSyncthing(tmp_path / f"st-{name}")
        st.generate(name)
        st.start()
        started.append(st)
        return st

    yield start
    stop_all(ManagedSyncthing.stop, started)


@dataclass
class TestNode:
    name: str
    home: Path
    syncthing: ManagedSyncthing

    def cli(self, *args: str, ok: bool = True):
        return run_cli(*args, "--home", self.home, ok=ok)

    def client(self) -> SyncthingClient:
        return self.syncthing.client()

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").output)


@pytest.fixture
def node_factory(tmp_path: Path, syncthing_factory) -> Callable[[str], TestNode]:
    """A node home made by `twinsync init` against its own real Syncthing."""

    def make(name: str) -> TestNode:
        st = syncthing_factory(name)
        home = tmp_path / name
        ep = st.endpoint
        run_cli("init", "--home", home, "--name", name, "--syncthing-url", ep.url, "--api-key", ep.api_key,
                "--link", "127.0.0.1:0")
        return TestNode(name, home, st)

    return make


def pair_mesh(nodes: list[TestNode]) -> None:
    """Full mesh through the CLI only: each node pairs with every other node's invite."""
    invites = {n.name: n.cli("invite").output.strip() for n in nodes}
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.cli("pair", invites[b.name])


@pytest.fixture
def mesh(node_factory) -> Callable[[int], list[TestNode]]:
    def make(n: int) -> list[TestNode]:
        nodes = [node_factory(f"node{i}") for i in range(1, n + 1)]
        pair_mesh(nodes)
        return nodes

    return make


class DaemonProcess:
    """A real `twinsync run` subprocess; its log is a file the test can read. Started here,
    waited for with `wait_started`, so the caller can register `stop` in between and even a
    failed start leaves nothing running."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home, self.log_path = home, log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("twinsync")), "run", "--home", str(home)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_started(self, timeout: float = 30.0) -> None:
        wait_for(lambda: "watching" in self.log() or self.proc.poll() is not None, timeout=timeout,
                 what="daemon start")
        assert self.proc.poll() is None, f"`twinsync run` exited with {self.proc.returncode}:\n{self.log()[-2000:]}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[[TestNode], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(node: TestNode) -> DaemonProcess:
        daemon = DaemonProcess(node.home, tmp_path / f"daemon-{node.name}-{len(started)}.log")
        started.append(daemon)
        daemon.wait_started()
        return daemon

    yield start
    codes = dict(zip((d.log_path.name for d in started), stop_all(DaemonProcess.stop, started)))
    assert all(code in (0, -9) for code in codes.values()), codes
