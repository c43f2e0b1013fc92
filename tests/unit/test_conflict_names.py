"""Syncthing's names for conflict copies, temp files and folder markers, as Syncthing makes them.

Expected names follow lib/model/folder_sendrecv.go:
    conflictName(name, lastModBy) = name[:len(name)-len(ext)]
        + time.Now().Format(".sync-conflict-20060102-150405-") + lastModBy + ext
with ext = filepath.Ext(name) (the LAST extension only) and lastModBy a 7-character ShortID.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path, PurePosixPath

import pytest

from syncthing.conflicts import (
    ConflictCopy,
    is_conflict_copy,
    is_syncthing_internal,
    is_syncthing_temp,
    parse_conflict_copy,
)

AT = datetime(2026, 11, 25, 8, 0, 0)


@pytest.mark.parametrize(("copy", "original", "device", "when"), [
    # a frame: only ".json" is the extension, the marker goes after ".frame"
    ("notes/today.frame.sync-conflict-20261125-080000-ABCDEFG.json", "notes/today.frame.json", "ABCDEFG", AT),
    # names as found in the wild (from projects that hit real Syncthing conflicts)
    ("agents/beastly.sync-conflict-20260818-173636-D4LGQYW.json", "agents/beastly.json", "D4LGQYW",
     datetime(2026, 8, 18, 17, 36, 36)),
    ("wisp.sync-conflict-20260817-144138-O4SHF2J.json", "wisp.json", "O4SHF2J", datetime(2026, 8, 17, 14, 41, 38)),
    ("texture1.sync-conflict-20240101-235959-V7OXBJ3.png", "texture1.png", "V7OXBJ3",
     datetime(2024, 1, 1, 23, 59, 59)),
    # no extension: the marker is appended
    ("Makefile.sync-conflict-20261125-080000-ABCDEFG", "Makefile", "ABCDEFG", AT),
    # Go's filepath.Ext(".bashrc") is ".bashrc", so the stem is empty
    (".sync-conflict-20261125-080000-ABCDEFG.bashrc", ".bashrc", "ABCDEFG", AT),
    ("a.tar.sync-conflict-20261125-080000-ABCDEFG.gz", "a.tar.gz", "ABCDEFG", AT),
    ("with space.sync-conflict-20261125-080000-ABCDEFG.txt", "with space.txt", "ABCDEFG", AT),
    # ShortID.String() is "" for device ID zero
    ("notes/x.frame.sync-conflict-20261125-080000-.json", "notes/x.frame.json", "", AT),
])
def test_parses_names_syncthing_makes(copy: str, original: str, device: str, when: datetime) -> None:
    parsed = parse_conflict_copy(copy)
    assert parsed == ConflictCopy(path=Path(copy), original=Path(original), time=when, device=device)
    assert is_conflict_copy(copy)


def test_parses_absolute_paths_and_keeps_the_folder(tmp_path: Path) -> None:
    copy = tmp_path / "ns" / "a.frame.sync-conflict-20261125-080000-ABCDEFG.json"
    assert parse_conflict_copy(copy).original == tmp_path / "ns" / "a.frame.json"


def test_time_is_naive_because_syncthing_writes_local_time_without_offset() -> None:
    assert parse_conflict_copy("a.sync-conflict-20261125-080000-ABCDEFG.txt").time.tzinfo is None


@pytest.mark.parametrize("name", [
    # the marker in the wrong place for Syncthing's rule
    "notes/today.sync-conflict-20261125-080000-ABCDEFG.frame.json",
    # malformed stamps or device ids
    "a.sync-conflict-2026112-080000-ABCDEFG.json",
    "a.sync-conflict-20261125-0800-ABCDEFG.json",
    "a.sync-conflict-20261325-080000-ABCDEFG.json",
    "a.sync-conflict-20261125-250000-ABCDEFG.json",
    "a.sync-conflict-20261125-080000-abcdefg.json",
    "a.sync-conflict-20261125-080000-ABCDEF1.json",
    "a.sync-conflict-20261125-080000-ABCDEFGH.json",
    "a.sync-conflict-20261125-080000.json",
    "a.sync-conflict-.json",
    # the marker alone, nothing left to be the original
    ".sync-conflict-20261125-080000-ABCDEFG",
])
def test_names_syncthing_cannot_have_made_do_not_parse(name: str) -> None:
    assert parse_conflict_copy(name) is None


@pytest.mark.parametrize("name", [
    "notes/today.sync-conflict-20261125-080000-ABCDEFG.frame.json",
    "a.sync-conflict-.json",
])
def test_syncthing_still_treats_any_name_with_the_marker_as_a_conflict_copy(name: str) -> None:
    assert is_conflict_copy(name)


@pytest.mark.parametrize("name", [
    "notes/today.frame.json",
    "notes/sync-conflict-20261125-080000-ABCDEFG.frame.json",
    "notes.sync-conflict-20261125-080000-ABCDEFG/today.frame.json",
    "a.SYNC-CONFLICT-20261125-080000-ABCDEFG.json",
    "a_sync-conflict-20261125-080000-ABCDEFG.json",
])
def test_ordinary_names_are_not_conflict_copies(name: str) -> None:
    assert not is_conflict_copy(name)
    assert parse_conflict_copy(name) is None


@pytest.mark.parametrize("name", [
    ".syncthing.today.frame.json.tmp",
    "notes/.syncthing.today.frame.json.tmp",
    "~syncthing~today.frame.json.tmp",
    # long names are replaced by a sha256 of the base name
    ".syncthing." + "0f" * 32 + ".tmp",
    PurePosixPath("notes/~syncthing~x.tmp"),
])
def test_syncthing_temp_names(name) -> None:
    assert is_syncthing_temp(name)


@pytest.mark.parametrize("name", [
    "today.frame.json",
    "syncthing.today.tmp",
    "notes/.syncthing/today.frame.json",
    "a.syncthing.b.tmp",
    ".twinsync-tmp-0a1b2c3d-today.frame.json",
])
def test_ordinary_names_are_not_syncthing_temp(name: str) -> None:
    assert not is_syncthing_temp(name)


@pytest.mark.parametrize("relpath", [
    ".stfolder", ".stfolder/syncthing-folder-4a5b6c.txt", ".stignore", ".stversions",
    ".stversions/notes/today~20261125-080000.frame.json", "./.stignore",
])
def test_syncthing_internal_paths(relpath: str) -> None:
    assert is_syncthing_internal(relpath)


@pytest.mark.parametrize("relpath", [
    "notes/.stignore", "notes/.stversions/x", ".stfolderx", ".stignore.bak", "stfolder", "", ".",
])
def test_ordinary_paths_are_not_syncthing_internal(relpath: str) -> None:
    assert not is_syncthing_internal(relpath)
