"""Peers' recovery folders hold what each peer signed and published; on this node they are
receive-only, so a file changed here is never sent. Since Syncthing 1.27.3 it is not replaced
either: no conflict copy, the file just sits "locally changed" and this node's copy silently
differs from its owner's. `LocalChangeGuard` reverts such changes so the owner's version comes
back, says so in one log line naming the folder, and notes it in state.db for `doctor`.

The daemon calls it on every `FolderSummary` event (Syncthing sends one a few seconds after a
scan finds the change) and on a schedule, for changes made while it did not listen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from folders.trace import utc_now
from orchestrator.node import Node
from orchestrator.state import open_state, stamp
from syncthing.client import SyncthingClient
from syncthing.errors import SyncthingAPIError
from syncthing.folderspec import RECOVERY_PREFIX, recovery_folder_id
from syncthing.localchanges import local_changes

logger = logging.getLogger(__name__)

#: The event-log kind of a revert (state.db `events`).
REVERTED = "reverted"
#: Summaries with local changes this soon after a revert is logged are the same episode
#: (Syncthing's summary may predate the revert's end): reverted again, not logged again.
REVERT_PENDING_S = 30.0


def owner_of(folder_id: str) -> str:
    return folder_id.removeprefix(RECOVERY_PREFIX)


def is_guarded(folder_id: str, me: str) -> bool:
    """A receive-only folder twinsync keeps equal to its owner's: another node's recovery folder."""
    return folder_id.startswith(RECOVERY_PREFIX) and folder_id != recovery_folder_id(me)


def guarded_folders(node: Node) -> list[str]:
    return sorted(f for f in map(recovery_folder_id, node.peers()) if is_guarded(f, node.name))


def count_local_changes(client: SyncthingClient, folder_ids: list[str]) -> dict[str, int]:
    """Items changed on this machine, per folder; a folder Syncthing does not have (pairing
    not finished) is left out, for `doctor`'s folder checks to report."""
    counts = {}
    for folder_id in folder_ids:
        try:
            counts[folder_id] = local_changes(client.folder_status(folder_id))
        except SyncthingAPIError as exc:
            if exc.status != 404:
                raise
    return counts


class LocalChangeGuard:
    """Thread-safe: the event stream and the scheduler both call it."""

    def __init__(self, node: Node, client: SyncthingClient, *,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.node, self.client, self.clock = node, client, clock
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}  # folder -> when its revert was last logged

    def on_summary(self, folder_id: str, summary: Mapping[str, Any]) -> bool:
        """A FolderSummary event's counts; True when a revert was asked for."""
        if not is_guarded(folder_id, self.node.name):
            return False
        with self._lock:
            return self._settle(folder_id, local_changes(summary))

    def check(self) -> list[str]:
        """Ask Syncthing about every peer's folder; returns the folders reverted."""
        with self._lock:
            counts = count_local_changes(self.client, guarded_folders(self.node))
            return [folder_id for folder_id, changes in counts.items() if self._settle(folder_id, changes)]

    def _settle(self, folder_id: str, changes: int) -> bool:
        if changes == 0:
            self._logged.pop(folder_id, None)
            return False
        self.client.revert(folder_id)  # again too while one runs: a change made meanwhile is in it
        asked = self._logged.get(folder_id)
        if asked is not None and time.monotonic() - asked < REVERT_PENDING_S:
            return True  # said already; Syncthing's next summary says 0 once it is done
        self._logged[folder_id] = time.monotonic()
        message = (f"{changes} item(s) changed on this machine in {folder_id}, {owner_of(folder_id)}'s "
                   f"recovery folder, were reverted so that {owner_of(folder_id)}'s signed version comes back")
        logger.warning("%s", message)
        _note(self.node, message, self.clock)
        return True


def _note(node: Node, message: str, clock: Callable[[], datetime]) -> None:
    db = open_state(node.layout.state_db)
    try:
        with db.conn:
            db["events"].insert({"ts": stamp(clock()), "kind": REVERTED, "message": message})
    finally:
        db.close()


@dataclass(frozen=True)
class LocalChanges:
    """What `doctor` shows: items changed here per peer folder now, and the last revert."""

    changed: dict[str, int]
    last_revert: tuple[str, str] | None  # (when, message)


def local_changes_now(node: Node) -> LocalChanges:
    """Raises SyncthingError when Syncthing does not answer."""
    counts = count_local_changes(node.client, guarded_folders(node))
    changed = {folder_id: count for folder_id, count in counts.items() if count}
    db = open_state(node.layout.state_db)
    try:
        row = db.execute("SELECT ts, message FROM events WHERE kind = ? ORDER BY id DESC LIMIT 1",
                         [REVERTED]).fetchone()
    finally:
        db.close()
    return LocalChanges(changed, (row[0], row[1]) if row else None)

