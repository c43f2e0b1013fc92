"""Syncthing 2.x's database migration, seen from its API address.

On the first start after an upgrade from 1.x, Syncthing 2.x migrates its database before it
serves the API. Meanwhile a stand-in server (cmd/syncthing/main.go, `migratingAPI`) listens
on the GUI address, without TLS or authentication, and answers every path with HTTP 200,
`Content-Type: text/plain; charset=utf-8`, the banner below, a blank line and its log so far.
"""

from __future__ import annotations

#: The first line of every answer of Syncthing's migration server (v2.0 to v2.1).
MIGRATION_BANNER = "*** Database migration in progress ***"


def is_migration_answer(content_type: str | None, body: bytes) -> bool:
    """True when an HTTP answer is the migration server's and not the REST API's (which
    answers JSON, or nothing)."""
    return ((content_type or "").split(";")[0].strip().lower() == "text/plain"
            and body.lstrip().startswith(MIGRATION_BANNER.encode()))
