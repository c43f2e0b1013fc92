"""Run code this node does not fully trust (a reasoner, an approved module) as a child
process that cannot take the daemon down or read its secrets.

The child gets: a time limit (the whole process group is killed with SIGKILL when it is
over), a memory limit (RLIMIT_AS), a cap on what it may write (RLIMIT_FSIZE, and stdout and
stderr go to files, so a flood never fills the daemon's memory), no core dumps, a fresh
scratch directory as its working directory and HOME, and an environment built from a short
whitelist: never TWINSYNC_HOME, the node key or the Syncthing API key. Every file descriptor
but stdin/stdout/stderr is closed (`close_fds`), so an open key file cannot leak either.

A descendant that leaves the process group (setsid) is still found after the run by a
random token in its environment and killed. The limits are set by a tiny launcher (`python -I -c ...` that calls setrlimit and then
execs the real program) rather than by `preexec_fn`, which is unsafe in a process with
threads, as the daemon is.
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

OK, TIMEOUT, MEMORY, CRASHED, GARBAGE = "ok", "timeout", "memory", "crashed", "garbage"
#: Variables a child may inherit from the daemon; everything else (TWINSYNC_HOME, tokens,
#: proxies with passwords, ...) stays behind.
ENV_WHITELIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
#: Every run's environment carries a random token under this name: a descendant that left
#: the process group (setsid) is still found by it in /proc and killed after the run.
RUN_MARKER = "TWINSYNC_RUN"
#: Seconds to wait for what a run left behind to die after SIGKILL.
KILL_WAIT_S = 2.0
#: What a child's stderr may say when it ran out of memory under RLIMIT_AS.
_MEMORY_WORDS = (b"MemoryError", b"Cannot allocate memory", b"out of memory", b"bad_alloc")
_LAUNCHER = (
    "import os, resource, sys\n"
    "mem, out = int(sys.argv[1]), int(sys.argv[2])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (out, out))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "try:\n"
    "    os.execvp(sys.argv[3], sys.argv[3:])\n"
    "except OSError as exc:\n"
    "    sys.stderr.write(f'cannot start {sys.argv[3]}: {exc.strerror}\\n')\n"
    "    sys.exit(127)\n"
)


@dataclass(frozen=True)
class Limits:
    """Per run; `[reasoner]` in twinsync.toml sets them for the reasoner."""

    timeout_s: float = 30.0
    memory_mb: int = 512
    max_output: int = 1024 * 1024


@dataclass(frozen=True)
class Program:
    """What to run: argv, extra environment, and how reasons name it ("module notes 1.2")."""

    argv: tuple[str, ...]
    label: str
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RunResult:
    """What became of one run: `status` is one of ok, timeout, memory, crashed, garbage;
    `reason` is one sentence for people ("" when ok)."""

    status: str
    reason: str
    stdout: bytes
    stderr_tail: str
    returncode: int | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.status == OK


def clean_env(extra: Mapping[str, str] | None = None, *, scratch: Path) -> dict[str, str]:
    """The whitelist, with HOME and TMPDIR pointing into the scratch directory."""
    env = {name: os.environ[name] for name in ENV_WHITELIST if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"HOME": str(scratch), "TMPDIR": str(scratch), "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONIOENCODING": "utf-8"})
    env.update(extra or {})
    return env


def run(argv: Sequence[str], *, stdin: bytes = b"", limits: Limits = Limits(),
        env: Mapping[str, str] | None = None, scratch_root: Path | None = None,
        what: str = "the program") -> RunResult:
    """Run `argv` under `limits` in a fresh scratch directory (removed afterwards) and say
    how it ended. Never raises for anything the child does; `what` names it in reasons."""
    scratch = Path(tempfile.mkdtemp(prefix="twinsync-run-", dir=scratch_root))
    work = scratch / "work"
    work.mkdir()
    started = time.monotonic()
    token = secrets.token_hex(8)
    try:
        return _run(list(argv), stdin, limits, {**clean_env(env, scratch=work), RUN_MARKER: token}, scratch, work,
                    what, started)
    finally:
        _kill_marked(token)
        shutil.rmtree(scratch, ignore_errors=True)


def _run(argv: list[str], stdin: bytes, limits: Limits, env: dict[str, str], scratch: Path,
         work: Path, what: str, started: float) -> RunResult:
    launcher = [sys.executable, "-I", "-c", _LAUNCHER, str(limits.memory_mb * 1024 * 1024),
                str(limits.max_output + 1), *argv]
    paths = {name: scratch / name for name in ("stdin", "stdout", "stderr")}
    paths["stdin"].write_bytes(stdin)
    with open(paths["stdin"], "rb") as fin, open(paths["stdout"], "wb") as fout, \
            open(paths["stderr"], "wb") as ferr:
        try:
            proc = subprocess.Popen(launcher, stdin=fin, stdout=fout, stderr=ferr, cwd=work, env=env,
                                    close_fds=True, start_new_session=True)
        except OSError as exc:
            return _result(CRASHED, f"{what} could not be started ({exc.strerror}).", b"", "", None, started)
        timed_out, status, usage = _wait(proc.pid, limits.timeout_s)
        _kill_group(proc.pid)
        # Linux carries the parent's peak RSS into the child's across (v)fork and exec: a
        # child's peak no higher than ours (read now, so it covers the moment of the exec)
        # may be ours, not the module's, and proves nothing.
        inherited_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elapsed = time.monotonic() - started
    with open(paths["stdout"], "rb") as fh:
        out = fh.read(limits.max_output + 1)
    err = _tail(paths["stderr"])
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by _wait; Popen must not wait for it again
    if timed_out:
        return _result(TIMEOUT, f"{what} ran longer than its limit of {limits.timeout_s:g} s and was stopped.",
                       out, err, code, started)
    if code == -signal.SIGXFSZ or len(out) > limits.max_output:
        return _result(GARBAGE, f"{what} wrote more than {limits.max_output} bytes and was stopped.",
                       b"", err, code, started)
    near_limit = (usage is not None and usage.ru_maxrss > inherited_kb
                  and usage.ru_maxrss * 1024 >= limits.memory_mb * 1024 * 1024 * 0.9)
    if code != 0 and (any(word.decode() in err for word in _MEMORY_WORDS) or near_limit):
        return _result(MEMORY, f"{what} needed more than its memory limit of {limits.memory_mb} MB and was "
                       "stopped.", out, err, code, started)
    if code != 0:
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        last = err.strip().splitlines()[-1][:200] if err.strip() else "no error output"
        return _result(CRASHED, f"{what} {how} ({last}).", out, err, code, started)
    logger.debug("%s finished in %.3f s", what, elapsed)
    return _result(OK, "", out, err, code, started)


def _wait(pid: int, timeout_s: float):
    """(timed out, wait status, rusage): wait4 gives this child's own peak memory."""
    deadline = time.monotonic() + timeout_s
    pause = 0.002
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return False, status, usage
        if time.monotonic() >= deadline:
            _kill_group(pid)
            _, status, usage = os.wait4(pid, 0)
            return True, status, usage
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _kill_group(pid: int) -> None:
    """The child ran in its own session: kill whatever it left behind, too."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_marked(token: str) -> None:
    """Kill what is left of a run outside its process group: any process of ours whose
    environment holds the run's token (one that also wiped its environment escapes this;
    approval is the guard against code that tries that hard)."""
    marker = f"{RUN_MARKER}={token}".encode()
    killed: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                found = marker in fh.read().split(b"\0")
        except OSError:
            continue
        if found:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    # SIGKILL is delivered, not yet acted on: wait until each is gone (or a zombie), so that
    # when `run` returns nothing of the run is running, on a busy machine too.
    deadline = time.monotonic() + KILL_WAIT_S
    while killed and time.monotonic() < deadline:
        killed = [pid for pid in killed if _running(pid)]
        if killed:
            time.sleep(0.005)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _tail(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - size))
        return fh.read().decode("utf-8", "replace")


def _result(status: str, reason: str, out: bytes, err: str, code: int | None, started: float) -> RunResult:
    return RunResult(status, reason, out, err, code, time.monotonic() - started)
