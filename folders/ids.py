"""Unique prefixes: a person may type the first characters of any id a command lists
(a snapshot name, a fork id, a branch, a session), as with Git's abbreviated hashes."""

from __future__ import annotations

from collections.abc import Iterable

from folders.errors import TwinsyncError, echo


class IdError(TwinsyncError):
    """No listed id, or more than one, begins with what the user typed."""


def by_prefix(given: str, ids: Iterable[str], *, what: str, listing: str, strip: str = "") -> str:
    """The one id that is `given` or begins with it (an exact match wins over longer ids);
    `strip` is a prefix every id may carry that the user need not type ("sha256:").
    `what` names the kind ("snapshot"), `listing` the command that lists them."""
    ids = list(dict.fromkeys(ids))
    typed = given.strip()
    if typed in ids:
        return typed
    if strip and strip + typed in ids:
        return strip + typed
    matches = [i for i in ids if typed and (i.startswith(typed) or i.removeprefix(strip).startswith(typed))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise IdError(f"There is no {what} {echo(given)}; list them with `{listing}`.")
    shown = ", ".join(m.removeprefix(strip) for m in matches[:4]) + (", …" if len(matches) > 4 else "")
    raise IdError(f"{echo(given)} begins {len(matches)} {what}s ({shown}); type more of it.")
