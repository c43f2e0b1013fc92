"""Invite codes: one copy-pasteable line that carries what a peer needs to pair with us.

Format: `twinsync1.<base64url of canonical JSON>.<first 16 hex of its sha256>`. The
checksum catches a truncated or mistyped paste before anything is changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from folders.errors import InviteError, KeyFileError, HomeError
from folders.keys import parse_public_key
from folders.layout import check_node_name

PREFIX = "twinsync1"
DEVICE_ID_RE = re.compile(r"^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$")
ADDRESS_RE = re.compile(r"^(dynamic|(tcp|tcp4|tcp6|quic|quic4|quic6)://\S+)$")


@dataclass(frozen=True)
class Invite:
    name: str
    device_id: str
    addresses: tuple[str, ...]
    public_key: str
    #: The port of the node's peer link when it is a fixed one (`[link] listen`), so a new
    #: peer can ask before the node's first fingerprint arrives; left out otherwise.
    link: int | None = None

    def encode(self) -> str:
        payload = json.dumps(
            {"name": self.name, "device_id": self.device_id, "addresses": list(self.addresses),
             "public_key": self.public_key, **({"link": self.link} if self.link else {})},
            sort_keys=True, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{PREFIX}.{body}.{_checksum(body)}"


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def decode_invite(code: str) -> Invite:
    """Parse and check an invite; every failure says to copy the whole line again."""
    again = "copy the whole line printed by `twinsync invite` on the other machine and try again"
    parts = code.strip().split(".")
    if parts[0] != PREFIX:
        raise InviteError(f"This is not a twinsync invite code (it should start with '{PREFIX}.'); {again}.")
    if len(parts) != 3 or _checksum(parts[1]) != parts[2]:
        raise InviteError(f"The invite code is truncated or altered (checksum mismatch); {again}.")
    try:
        body = parts[1]
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        invite = Invite(str(data["name"]), str(data["device_id"]),
                        tuple(str(a) for a in data["addresses"]), str(data["public_key"]), data.get("link"))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InviteError(f"The invite code does not decode; {again}.") from None
    try:
        check_node_name(invite.name)
        parse_public_key(invite.public_key)
    except (HomeError, KeyFileError) as exc:
        raise InviteError(f"The invite code carries a bad value ({exc}); {again}.") from None
    if not DEVICE_ID_RE.match(invite.device_id):
        raise InviteError(f"The invite code carries a malformed Syncthing device ID; {again}.")
    if not invite.addresses or not all(ADDRESS_RE.match(a) for a in invite.addresses):
        raise InviteError(f"The invite code carries malformed addresses; {again}.")
    if invite.link is not None and (type(invite.link) is not int or not 0 < invite.link < 65536):
        raise InviteError(f"The invite code carries a link port that is not a port number; {again}.")
    return invite
