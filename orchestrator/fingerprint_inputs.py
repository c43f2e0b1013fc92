"""Whether anything a fingerprint is made of may have changed, known for the price of a few
system calls.

Making a fingerprint reads the whole frame index, every step of the trace (its metrics and
facts), the modules, the forks and every peer's fingerprint: with 100k frames and a 1M-step
trace that is most of what an idle daemon spends, every publish interval, to find nothing
new. Its inputs live in two SQLite files and a few small files, so the daemon compares:

- trace.db and state.db: their `DatabaseVersion` (`PRAGMA data_version` on a connection
  kept open, and the file's identity);
- the files read whole: every node's fingerprint.json (the peers' count in the agreement
  metric, this node's own one may have been removed), trusted.toml, topology.json;
- the link port the fingerprint announces.

Anything else that could change a fingerprint is caught by the full check every
`FULL_CHECK_S` (sooner when `fingerprint_stale_s` is short), which also rewrites it when it
is half-way to stale.

The check's own writes are not changes: what it keeps in state.db (the metrics history,
the profile cache) goes through `writer()`, the connection whose data_version is watched
(it moves only for other connections' commits), and a fingerprint it rewrote is stamped
again as written. Otherwise every change would cost a second full check, to find only
what the first one wrote.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from folders.fingerprint import FINGERPRINT_NAME
from orchestrator.dbversion import DatabaseVersion, T, file_identity
from orchestrator.heartbeat import link_port
from orchestrator.node import Node
from orchestrator.topology import TOPOLOGY_FILE

#: The longest an idle daemon goes without the full check (it reads everything again); at
#: most a quarter of `fingerprint_stale_s`, so the refresh at half-way to stale comes in time.
FULL_CHECK_S = 300.0


class FingerprintInputs:
    """Held by the daemon for its life (the two connections), used from its scheduler thread."""

    def __init__(self, node: Node, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._node = node
        self._clock = clock
        self._databases = [DatabaseVersion(node.layout.trace_db), DatabaseVersion(node.layout.state_db)]
        self._seen: tuple[Any, ...] | None = None
        self._checked_at = float("-inf")
        self._every = min(FULL_CHECK_S, node.config.traces.fingerprint_stale_s / 4)
        self._own = node.layout.recovery(node.name) / FINGERPRINT_NAME
        self._counts: tuple[Any, Any] | None = None  # (state.db and topology as seen, the counts)

    def due(self) -> Callable[[bool], None] | None:
        """None when nothing the last full check read has changed since, and that check is
        younger than FULL_CHECK_S (or a quarter of fingerprint_stale_s): the fingerprint on
        disk is still what it would be. Else the full check is due: call what is returned
        once it succeeded, saying whether it rewrote this node's fingerprint. The stamp is
        taken before the check reads anything, so a change made while it reads shows as a
        difference next time."""
        stamp, at = self.stamp(), self._clock()
        if stamp == self._seen and at - self._checked_at < self._every:
            return None

        def done(rewrote: bool) -> None:
            versions, files, port = stamp
            if rewrote:
                own = str(self._own)
                files = tuple((path, file_identity(Path(path)) if path == own else seen)
                              for path, seen in files)
            self._seen, self._checked_at = (versions, files, port), at
        return done

    def writer(self) -> sqlite3.Connection | None:
        """The connection to state.db for what the check keeps there (see the module)."""
        return self._databases[1].writer()

    def frame_counts(self, compute: Callable[[], T]) -> T:
        """`compute()` (the frame counts and frames root: every valid frame's path and hash,
        seconds with 100k frames), computed again only when state.db or the topology
        changed. A check's own writes go through `writer()`, which state.db's version here
        does not see, so a trace change alone no longer recounts the frames. The version
        is taken before computing: a commit meanwhile shows next time."""
        at = (self._databases[1].current(), file_identity(self._node.layout.home / TOPOLOGY_FILE))
        if self._counts is None or self._counts[0] != at:
            self._counts = (at, compute())
        return self._counts[1]

    def stamp(self) -> tuple[Any, ...]:
        layout = self._node.layout
        versions = tuple(db.current() for db in self._databases)
        root = layout.recovery_root
        try:
            folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        except OSError:
            folders = []
        files = [root / name / FINGERPRINT_NAME for name in folders]
        files += [layout.trusted, layout.home / TOPOLOGY_FILE]
        return versions, tuple((str(p), file_identity(p)) for p in files), link_port(layout.home)

    def close(self) -> None:
        for db in self._databases:
            db.close()
