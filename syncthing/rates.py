"""Transfer rates from two readings of `/rest/system/connections`, as Syncthing's own GUI
computes them: Syncthing gives byte totals per connection, never a rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def transfer_rates(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]],
                   seconds: float) -> dict[str, tuple[float, float]]:
    """Device ID → (bytes/s in, bytes/s out) over `seconds`. A device missing from either
    reading, or whose totals went down (its connection restarted), has no rate."""
    if seconds <= 0:
        return {}
    rates = {}
    for device, now in after.items():
        then = before.get(device)
        if then is None:
            continue
        received = now.get("inBytesTotal", 0) - then.get("inBytesTotal", 0)
        sent = now.get("outBytesTotal", 0) - then.get("outBytesTotal", 0)
        if received >= 0 and sent >= 0:
            rates[device] = (received / seconds, sent / seconds)
    return rates
