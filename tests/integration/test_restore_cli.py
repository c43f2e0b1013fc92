"""The real `twinsync restore` on a real node home.

It asks before it replaces trace.db (issue 12): in a pseudo-terminal a person presses
Ctrl-C (or Ctrl-D, or answers no) at the question, or runs it with no terminal at all.
Each time nothing is restored, nothing on disk changes, and one plain sentence says so; no
traceback, no click `Aborted!`. And two restores started at once never leave a broken or
mixed trace.db."""

from __future__ import annotations

import hashlib
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TestNode as Node  # not "Test*" here, or pytest tries to collect it

pytestmark = pytest.mark.integration

TWINSYNC = str(Path(sys.executable).with_name("twinsync"))
QUESTION = b"[y/N]:"
#: Exit codes documented in `twinsync restore --help`.
EXIT_DECLINED, EXIT_INTERRUPTED = 3, 130


@pytest.fixture
def node(node_factory) -> Node:
    """A real node home with one published session, so it has a snapshot to restore."""
    node = node_factory("node1")
    session = node.cli("trace", "start", "plan the week").output.strip()
    node.cli("trace", "finish", session, "gym on Tuesday")
    assert "snapshot" in node.cli("trace", "publish").output
    node.cli("trace", "start", "still thinking")  # unpublished work a restore must not touch
    return node


def _disk(home: Path) -> dict[str, str]:
    """Every file under the node home with its sha256: what "nothing changed" means."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file()}


def _read_until(fd: int, wanted: bytes | None, timeout: float = 30.0) -> bytes:
    """Read the terminal until `wanted` shows (None: until the child closes it)."""
    out = b""
    deadline = time.monotonic() + timeout
    while wanted is None or wanted not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {wanted!r}; the terminal shows:\n{out.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            chunk = b""
        if not chunk:
            if wanted is None:
                return out
            raise AssertionError(f"the command ended before {wanted!r}:\n{out.decode(errors='replace')}")
        out += chunk
    return out


def _wait_until_it_reads(pid: int, timeout: float = 30.0) -> None:
    """The question is on the terminal a moment before the child blocks in read(); a Ctrl-C
    in between only sets Python's signal flag, which nothing checks until a key arrives
    (a person is never that fast, a test is). Once the child sleeps, it sleeps in read()."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "S":
        if time.monotonic() > deadline:
            raise AssertionError("the command never waited for an answer")
        select.select([], [], [], 0.01)


def _said_after_question(shown: str, echo: str) -> str:
    """What the command printed after its question, without the terminal's echo of the keys."""
    return shown.split(QUESTION.decode(), 1)[1].strip().removeprefix(echo).strip()


def _answer_in_a_terminal(home: Path, keys: bytes) -> tuple[int, str]:
    """Run `twinsync restore --latest` on a pseudo-terminal (its controlling terminal, as in a
    shell), type `keys` at the question; its exit code and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing of pytest's runs here
        os.execv(TWINSYNC, [TWINSYNC, "restore", "--latest", "--home", str(home)])
    try:
        shown = _read_until(fd, QUESTION)
        _wait_until_it_reads(pid)
        os.write(fd, keys)
        shown += _read_until(fd, None)
    finally:
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            select.select([], [], [], 0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            done = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(done[1]), shown.decode(errors="replace").replace("\r\n", "\n")


def test_ctrl_c_at_the_question_restores_nothing_and_says_so_in_one_sentence(node: Node) -> None:
    before = _disk(node.home)
    code, shown = _answer_in_a_terminal(node.home, b"\x03")
    assert code == EXIT_INTERRUPTED, shown
    assert _said_after_question(shown, "^C") == "Nothing was restored; trace.db is unchanged.", shown
    assert "Traceback" not in shown and "Aborted" not in shown
    assert _disk(node.home) == before


@pytest.mark.parametrize("keys, echo", [(b"n\n", "n"), (b"\x04", "")], ids=["no", "ctrl-d"])
def test_no_or_ctrl_d_at_the_question_restores_nothing_and_names_yes(node: Node, keys: bytes, echo: str) -> None:
    before = _disk(node.home)
    code, shown = _answer_in_a_terminal(node.home, keys)
    assert code == EXIT_DECLINED, shown
    assert _said_after_question(shown, echo) == \
        "Nothing was restored; trace.db is unchanged. To restore without this question, add --yes.", shown
    assert "Traceback" not in shown and "Aborted" not in shown
    assert _disk(node.home) == before


def test_without_a_terminal_it_asks_for_yes_and_changes_nothing(node: Node) -> None:
    before = _disk(node.home)
    run = subprocess.run([TWINSYNC, "restore", "--latest", "--home", str(node.home)], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == EXIT_DECLINED
    assert run.stdout == ""
    assert run.stderr.strip() == ("Error: restore asks before replacing trace.db and there is no terminal to "
                                  "ask on. Nothing was restored; trace.db is unchanged. To restore without "
                                  "this question, add --yes.")
    assert _disk(node.home) == before



def test_two_restores_at_once_leave_one_sound_trace(node: Node) -> None:
    """Each run either restores or is refused with one `Error:` sentence (the other restore
    holds the node); trace.db ends whole, with every step and session it had, and no trace.db.tmp."""
    before = _trace(node.home)
    runs = [subprocess.Popen([TWINSYNC, "restore", "--latest", "--yes", "--home", str(node.home)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(60), *run.communicate()) for run in runs]
    assert any(code == 0 for code, _, _ in results), results
    for code, out, err in results:
        assert "Traceback" not in out + err, results
        if code == 0:  # no progress bar on a pipe, not even the newline a transient one leaves
            assert out.startswith("Restored ") and err == "", results
        else:  # the other restore holds the node, and is named as such
            assert code == 1 and out == "" and err.count("\n") == 1, results
            assert err.startswith("Error: A `twinsync restore` (pid ") and "wait for it to finish" in err, results
    assert _trace(node.home) == before
    assert not list(node.home.glob("trace.db.tmp*"))


def _trace(home: Path) -> tuple[str, set[tuple], set[tuple]]:
    """integrity_check, every step, every session (the open one came back on top)."""
    conn = sqlite3.connect(home / "trace.db")
    try:
        return (conn.execute("PRAGMA integrity_check").fetchone()[0],
                set(conn.execute("SELECT * FROM steps")),
                set(conn.execute("SELECT session, status, head FROM sessions")))
    finally:
        conn.close()
