"""Names Syncthing gives its own files: conflict copies, temporary files and folder markers.

Each rule mirrors Syncthing's source so twinsync classifies a name exactly as Syncthing
does: `conflictName` and `isConflict` in lib/model/folder_sendrecv.go, `IsTemporary` in
lib/fs/tempname.go and `IsInternal` in lib/fs/filesystem.go.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath

CONFLICT_MARKER = ".sync-conflict-"
#: Syncthing recognises both prefixes on every platform, whichever one it writes.
TEMP_PREFIXES = ("~syncthing~", ".syncthing.")
#: Only at the folder root; everything beneath them is Syncthing's too.
INTERNAL_NAMES = frozenset({".stfolder", ".stignore", ".stversions"})

# conflictName(name, lastModBy) = stem + now.Format(".sync-conflict-20060102-150405-") + lastModBy + ext,
# where ext is Go's filepath.Ext (the last dot onwards, so "a.frame.json" gives ".json") and
# lastModBy is a ShortID: the first 7 base32 characters of the device ID, or "" for ID zero.
_CONFLICT_NAME = re.compile(
    r"(?P<stem>.*)\.sync-conflict-(?P<stamp>[0-9]{8}-[0-9]{6})-(?P<device>[A-Z2-7]{7})?(?P<ext>\.[^.]*)?",
    re.DOTALL,
)
_STAMP_FORMAT = "%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class ConflictCopy:
    """A conflict copy and the file it was split from.

    `time` is naive: Syncthing formats `time.Now()` in the local zone of the node that made
    the copy and writes no offset. `device` is the short ID (first block of the device ID)
    of the node that last modified the *winning* version: Syncthing renames the local file
    aside under the incoming file's `ModifiedBy`, so the copy holds the losing bytes.
    """

    path: Path
    original: Path
    time: datetime
    device: str


def is_conflict_copy(name: str | os.PathLike[str]) -> bool:
    """Syncthing's own test: any base name containing the marker, even one it could not
    have made. Syncthing never makes a conflict copy of such a file; it deletes it instead."""
    return CONFLICT_MARKER in _base_name(name)


def parse_conflict_copy(path: str | os.PathLike[str]) -> ConflictCopy | None:
    """None for names Syncthing's `conflictName` cannot have produced."""
    path = Path(path)
    match = _CONFLICT_NAME.fullmatch(path.name)
    if match is None:
        return None
    original_name = match["stem"] + (match["ext"] or "")
    if not original_name:
        return None
    try:
        moment = datetime.strptime(match["stamp"], _STAMP_FORMAT)
    except ValueError:
        return None
    return ConflictCopy(path=path, original=path.with_name(original_name), time=moment, device=match["device"] or "")


def is_syncthing_temp(name: str | os.PathLike[str]) -> bool:
    """Syncthing writes `.syncthing.<name>.tmp` (`~syncthing~<name>.tmp` on Windows), or the
    prefix and a sha256 for long names, and tests only the prefix."""
    return _base_name(name).startswith(TEMP_PREFIXES)


def is_syncthing_internal(relpath: str | os.PathLike[str]) -> bool:
    """`relpath` is relative to the folder root: `.stignore` deeper down is an ordinary file."""
    if isinstance(relpath, str):  # the daemon's hot path: 100k calls per reconcile
        first = next((part for part in relpath.split("/") if part not in ("", ".")), "")
        return first in INTERNAL_NAMES
    parts = PurePath(relpath).parts
    return bool(parts) and parts[0] in INTERNAL_NAMES


def _base_name(name: str | os.PathLike[str]) -> str:
    """The last path component; plain string work for str, as pathlib costs ~5 µs a call."""
    return name.rsplit("/", 1)[-1] if isinstance(name, str) else PurePath(name).name
