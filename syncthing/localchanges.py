"""Local changes in a receive-only folder, as Syncthing counts them.

A receive-only folder never sends what is changed on its own machine; Syncthing flags such
files "locally changed" and, since 1.27.3, keeps them as they are (no conflict copy) until
someone reverts them (`POST /rest/db/revert`, the same call from 1.19 to 2.x). The counts are
in `/rest/db/status` and in every `FolderSummary` event's summary, under the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: What a revert undoes: a changed or added file, directory or symlink, and a deleted one.
LOCAL_CHANGE_FIELDS = ("receiveOnlyChangedFiles", "receiveOnlyChangedDirectories",
                       "receiveOnlyChangedSymlinks", "receiveOnlyChangedDeletes")


def local_changes(summary: Mapping[str, Any]) -> int:
    """Items changed on this machine in a receive-only folder (0 for any other folder type,
    whose summary has the fields at 0)."""
    return sum(int(summary.get(name) or 0) for name in LOCAL_CHANGE_FIELDS)
