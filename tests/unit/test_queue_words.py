"""The sentences a queue item says (CLI, TUI, --json and Git alike): who wrote each version,
when, what each choice does on every node, and who decided where."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.cli.conflicts import _checked_ids
from orchestrator.conflicts import ANOTHER_NODE, ConflictError, ConflictItem, detail_lines

ITEM = ConflictItem(
    id=4, kind="conflict", frame="notes/today", path="notes/today.frame.json",
    copy_path="notes/today.frame.sync-conflict-20261125-080512-ZAIWJ4I.json", device="ZAIWJ4I",
    status="open", reason=None, branch="fork/notes/today/ZAIWJ4I-20261125-080512", ours_hash="sha256:aa",
    theirs_hash="sha256:bb", ours_author="laptop", theirs_author="mybox", created="2026-11-25T08:05:14Z",
    decided_by=None, decided_at=None, ours_created="2026-11-25T08:04:51.120Z",
    theirs_created="2026-11-25T08:03:07Z", device_name="laptop")


def test_an_open_conflict_names_both_authors_when_they_wrote_and_what_each_choice_does():
    lines = dict(detail_lines(ITEM))
    assert lines["current version"] == "by laptop, written at 2026-11-25 08:04:51 UTC"
    assert lines["set-aside version"].startswith("by mybox, written at 2026-11-25 08:03:07 UTC (in Syncthing's "
                                                 "conflict copy notes/today.frame.sync-conflict-")
    assert "device ZAIWJ4I = laptop, the last to change the version that won" in lines["set-aside version"]
    assert lines["approve"] == ("the set-aside version by mybox becomes notes/today on every node; the conflict "
                                "copy is removed and the version by laptop stays in Git history.")
    assert lines["reject"].startswith("the current version by laptop stays notes/today on every node")
    assert "decided" not in lines


def test_the_git_message_names_the_author_of_the_text_and_where_it_was_approved():
    message = ITEM.commit_message("desktop")
    subject, _, body = message.partition("\n\n")
    assert subject == "notes/today: the set-aside version by mybox becomes current (approved on desktop, queue item #4)"
    assert "version replaced: by laptop, written at 2026-11-25 08:04:51 UTC" in body
    assert "ZAIWJ4I" in body and "device" not in subject  # the device is a detail, never the subject


@pytest.mark.parametrize(("status", "by", "says"), [
    ("approved", "desktop", "approved on desktop at 2026-11-25 08:07:48 UTC"),
    ("rejected", "laptop", "rejected on laptop at 2026-11-25 08:07:48 UTC"),
    ("closed", ANOTHER_NODE, "closed: its copy went away here at 2026-11-25 08:07:48 UTC, decided on another node "
                             "(who decided shows once that node's trace is published and merged here) or removed by hand"),
    ("closed", "twinsync (the file is gone)", "closed by twinsync (the file is gone) at 2026-11-25 08:07:48 UTC"),
])
def test_a_decided_item_says_who_decided_and_where_and_offers_no_choice(status, by, says):
    item = replace(ITEM, status=status, decided_by=by, decided_at="2026-11-25T08:07:48Z")
    lines = dict(detail_lines(item))
    assert lines["decided"] == says == item.decision() == item.as_json()["decision"]
    assert "approve" not in lines and "current version when queued" in lines


def test_json_carries_the_same_sentences():
    data = ITEM.as_json()
    assert data["current_version"] == ITEM.current_version()
    assert (data["approve"], data["reject"]) == ITEM.consequences()
    assert data["ours_author"] == "laptop" and data["device_name"] == "laptop"


@pytest.mark.parametrize("typed", ["abc", "0", "-1", "3.5", "", str(2**63)])
def test_an_id_no_item_can_have_is_one_sentence(typed):
    with pytest.raises(ConflictError, match=r"^There is no conflict #.*; a queue item is named by its number"):
        _checked_ids([typed])


def test_ids_are_numbers():
    assert _checked_ids(["3", " 12 "]) == [3, 12]

