"""Unique id prefixes, the one rule behind every command that takes a listed id."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from folders.ids import IdError, by_prefix

SNAPS = ["snap-20261201T021400Z", "snap-20261201T021455Z", "snap-20261130T235900Z"]


@pytest.mark.parametrize(("typed", "found"), [
    ("snap-20261130", "snap-20261130T235900Z"),
    ("snap-20261201T021400Z", "snap-20261201T021400Z"),  # whole
    ("snap-20261201T0214", None),  # two begin with it
    ("  snap-20261130T2359 ", "snap-20261130T235900Z"),
])
def test_a_unique_prefix_names_one_id(typed, found):
    if found is None:
        with pytest.raises(IdError, match=r"begins 2 snapshots \(snap-20261201T021400Z, snap-20261201T021455Z\); type more"):
            by_prefix(typed, SNAPS, what="snapshot", listing="twinsync snapshots")
    else:
        assert by_prefix(typed, SNAPS, what="snapshot", listing="twinsync snapshots") == found


def test_an_exact_id_wins_over_longer_ones_it_begins():
    assert by_prefix("abc", ["abc", "abcd"], what="fork", listing="twinsync forks") == "abc"


def test_nothing_typed_or_nothing_matching_names_the_listing_command():
    for typed in ("", "zzz"):
        with pytest.raises(IdError, match=r"There is no fork .*; list them with `twinsync forks`\."):
            by_prefix(typed, ["17b56638f1a2"], what="fork", listing="twinsync forks")


def test_a_common_prefix_need_not_be_typed():
    branches = ["sha256:9f8e7d6c5b4a", "sha256:1a2b3c4d5e6f"]
    assert by_prefix("9f8e", branches, what="branch", listing="twinsync forks", strip="sha256:") == branches[0]
    assert by_prefix("sha256:1a", branches, what="branch", listing="twinsync forks", strip="sha256:") == branches[1]


@given(st.lists(st.text("0123456789abcdef", min_size=12, max_size=12), min_size=1, max_size=20, unique=True),
       st.data())
def test_every_listed_id_and_its_shortest_unique_prefix_find_it(ids, data):
    target = data.draw(st.sampled_from(ids))
    assert by_prefix(target, ids, what="fork", listing="twinsync forks") == target
    n = next(n for n in range(1, 13) if sum(i.startswith(target[:n]) for i in ids) == 1)
    assert by_prefix(target[:n], ids, what="fork", listing="twinsync forks") == target
    if n > 1:
        with pytest.raises(IdError):
            by_prefix(target[:n - 1], ids, what="fork", listing="twinsync forks")
