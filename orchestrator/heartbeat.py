"""The daemon's heartbeat: a small JSON file in the node home that `twinsync run` rewrites
every few seconds (and whenever a piece's health changes), and `read_health`, which turns
it into one of four states for `status`, `doctor`, `nodes` and the TUI:

- running: the daemon holds the home's lock and its heartbeat is fresh;
- degraded: it runs, but a piece is failing or waits on something (Syncthing is down);
- stalled: it holds the lock but stopped refreshing its heartbeat (frozen, or stuck);
- not running: nobody holds the lock (it stopped, crashed or was killed).

Whether it runs comes from the lock (`running_daemon`), not from the pid in the file, so a
pid reused by another program never looks like a daemon.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from folders.errors import echo
from folders.files import write_atomic
from folders.trace import parse_ts, utc_now
from orchestrator.lock import DAEMON_LOCK, running_daemon
from orchestrator.supervisor import FAILED, OK, PieceHealth

HEARTBEAT_NAME = "heartbeat.json"
#: How often the daemon rewrites its heartbeat when nothing changes.
HEARTBEAT_INTERVAL_S = 5.0
#: A heartbeat older than this, from a daemon that still holds the lock, means it is stalled.
STALE_AFTER_S = 30.0

RUNNING, DEGRADED, STALLED, NOT_RUNNING = "running", "degraded", "stalled", "not running"


@dataclass(frozen=True)
class Heartbeat:
    """What the daemon writes; times are UTC text (`format_ts`), None until it happened."""

    pid: int
    started: str
    written: str
    last_batch: str | None = None
    last_merge: str | None = None
    last_publish: str | None = None
    pieces: list[PieceHealth] = field(default_factory=list)
    #: The port the peer link listens on (None: no link), announced in the fingerprint.
    link_port: int | None = None
    #: Peer → {"rtt_ms", "problem", "at"}: the daemon's last signed ping over each link.
    links: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DaemonHealth:
    """What a reader shows: the state, one sentence for people, and the last heartbeat."""

    state: str
    message: str
    pid: int | None = None
    heartbeat: Heartbeat | None = None

    @property
    def ok(self) -> bool:
        return self.state == RUNNING

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_heartbeat(home: Path, beat: Heartbeat) -> None:
    write_atomic(Path(home) / HEARTBEAT_NAME, json.dumps(beat.to_dict(), indent=1, sort_keys=True).encode())


def load_heartbeat(home: Path) -> Heartbeat | None:
    """The last heartbeat written, or None when there is none or it cannot be read."""
    try:
        data = json.loads((Path(home) / HEARTBEAT_NAME).read_text(encoding="utf-8"))
        pieces = [PieceHealth(**p) for p in data.pop("pieces", [])]
        beat = Heartbeat(**data, pieces=pieces)
        parse_ts(beat.written)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return beat


def link_port(home: Path) -> int | None:
    """The port the running daemon of `home` serves the peer link on (None: no daemon, or no
    link). The fingerprint announces it, and this node's own CLI routes questions through it."""
    if running_daemon(home) is None:
        return None
    beat = load_heartbeat(home)
    return beat.link_port if beat is not None else None


def read_health(home: Path, now: datetime | None = None) -> DaemonHealth:
    """The daemon's state for `home`; never raises."""
    now = now or utc_now()
    pid = running_daemon(home)
    beat = load_heartbeat(home)
    if pid is None:
        last = f" (its last heartbeat was at {_short(beat.written)})" if beat else ""
        return DaemonHealth(NOT_RUNNING, f"No twinsync daemon runs for this node{last}; "
                                         "start it with `twinsync run`.", None, beat)
    who = f"The daemon (pid {pid})" if pid else "The daemon"
    if beat is None or (pid and beat.pid != pid):  # none of its own yet: judged by when it took the lock
        try:
            locked = datetime.fromtimestamp((Path(home) / DAEMON_LOCK).stat().st_mtime, timezone.utc)
        except OSError:
            locked = now
        if (now - locked).total_seconds() <= STALE_AFTER_S:
            return DaemonHealth(RUNNING, f"{who} is starting.", pid, None)
        return DaemonHealth(STALLED, f"{who} has written no heartbeat since it started; it may be stuck or "
                                     "unable to write in its home: look at its log, or restart it.", pid, None)
    age = (now - parse_ts(beat.written)).total_seconds()
    if age > STALE_AFTER_S:
        return DaemonHealth(STALLED, f"{who} has not refreshed its heartbeat for {age:.0f} s; it may be "
                                     "frozen or overloaded: look at its log, or restart it.", pid, beat)
    troubled = [p for p in beat.pieces if p.state != OK]
    if troubled:
        what = "; ".join(f"{p.name} {'failed' if p.state == FAILED else 'is ' + p.state}: {echo(p.problem or '', quoted=False)}"
                         for p in troubled)
        return DaemonHealth(DEGRADED, f"{who} runs, but {what}.", pid, beat)
    return DaemonHealth(RUNNING, f"{who} runs since {_short(beat.started)}.", pid, beat)


def _short(ts: str) -> str:
    """`2026-11-25T07:53:50.123456Z` → `2026-11-25 07:53:50Z`, for sentences."""
    return ts[:19].replace("T", " ") + "Z"
