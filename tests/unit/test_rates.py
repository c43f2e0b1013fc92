"""Transfer rates from two readings of Syncthing's byte counters."""

from __future__ import annotations

from syncthing.rates import transfer_rates

A, B, C = "AAAAAAA", "BBBBBBB", "CCCCCCC"


def test_rates_are_the_counters_difference_over_the_time_between_readings():
    before = {A: {"inBytesTotal": 1000, "outBytesTotal": 0}, B: {"inBytesTotal": 5000, "outBytesTotal": 700}}
    after = {A: {"inBytesTotal": 3000, "outBytesTotal": 500}, B: {"inBytesTotal": 10, "outBytesTotal": 9},
             C: {"inBytesTotal": 1, "outBytesTotal": 1}}
    assert transfer_rates(before, after, 0.5) == {A: (4000.0, 1000.0)}  # B restarted, C is new: no rate
    assert transfer_rates(before, after, 0) == {}
    assert transfer_rates(after, after, 2.0) == {A: (0.0, 0.0), B: (0.0, 0.0), C: (0.0, 0.0)}
