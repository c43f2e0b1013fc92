"""Syncthing's `lastSeen` for a device it never saw is the Unix epoch in its local zone."""

from __future__ import annotations

import pytest

from orchestrator.pairing import seen_at


@pytest.mark.parametrize("never", [
    "1969-12-31T19:00:00-05:00",            # New York: the case `startswith("1970-")` missed
    "1970-01-01T00:00:00Z",
    "1970-01-01T01:00:00+01:00",
    "1969-12-31T16:00:00.000000000-08:00",  # Go's nanoseconds
    "1970-12-31T23:59:59+00:00",
    None, "",
])
def test_a_time_before_1971_in_any_zone_means_never_seen(never):
    assert seen_at(never) is None


@pytest.mark.parametrize("seen", [
    "2026-11-25T08:00:00.123456789+01:00",
    "1971-01-01T00:00:00Z",
    "1970-12-31T20:00:00-05:00",  # 01:00 UTC on 1 January 1971
])
def test_a_real_time_is_passed_on_as_syncthing_gave_it(seen):
    assert seen_at(seen) == seen


def test_a_value_that_is_not_a_time_is_shown_not_hidden():
    assert seen_at("yesterday") == "yesterday"
