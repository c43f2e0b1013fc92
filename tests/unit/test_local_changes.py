"""What counts as a local change in a receive-only folder: the fields of Syncthing's folder
summary (lib/model/folder_summary.go, the same names in 1.19.2, 1.29.5 and 2.1.3)."""

from syncthing.localchanges import local_changes


def test_changed_added_and_deleted_items_all_count():
    summary = {"receiveOnlyChangedFiles": 2, "receiveOnlyChangedDirectories": 1,
               "receiveOnlyChangedSymlinks": 0, "receiveOnlyChangedDeletes": 1,
               "receiveOnlyChangedBytes": 4096, "localFiles": 9}
    assert local_changes(summary) == 4


def test_a_clean_or_send_receive_folder_has_none():
    assert local_changes({"receiveOnlyChangedFiles": 0, "needFiles": 3}) == 0
    assert local_changes({}) == 0
