"""Invite codes survive a round trip and refuse every kind of damage with a plain sentence."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, strategies as st

from folders.errors import InviteError
from folders.invite import Invite, _checksum, decode_invite
from folders.keys import public_key_text
from orchestrator.pairing import invite_addresses

DEVICE = "MYTCZTN-NMBIQKE-DRTDEWC-OOUN3ML-USJUIYE-7YHOBH4-AUAOERA-XSZ4GQI"
KEY = public_key_text(Ed25519PrivateKey.generate().public_key())


def _invite(**changes) -> Invite:
    fields = dict(name="laptop", device_id=DEVICE, addresses=("tcp://127.0.0.1:22001",), public_key=KEY)
    return Invite(**{**fields, **changes})


def _forge(payload: dict) -> str:
    """A code with a correct checksum over a bad payload: only the content checks can stop it."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"twinsync1.{body}.{_checksum(body)}"


@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
       ports=st.lists(st.integers(1, 65535), min_size=1, max_size=3))
def test_round_trip(name, ports):
    invite = _invite(name=name, addresses=tuple(f"tcp://127.0.0.1:{p}" for p in ports))
    code = invite.encode()
    assert " " not in code and "\n" not in code
    assert decode_invite(code) == invite
    assert decode_invite(f"  {code}\n") == invite


@given(cut=st.integers(1, 200))
def test_any_truncation_is_refused(cut):
    code = _invite().encode()
    with pytest.raises(InviteError, match="truncated or altered"):
        decode_invite(code[:-cut])


@pytest.mark.parametrize("payload, message", [
    ({"name": "a b", "device_id": DEVICE, "addresses": ["dynamic"], "public_key": KEY}, "not allowed"),
    ({"name": "a", "device_id": "nope", "addresses": ["dynamic"], "public_key": KEY}, "device ID"),
    ({"name": "a", "device_id": DEVICE, "addresses": ["http://x"], "public_key": KEY}, "addresses"),
    ({"name": "a", "device_id": DEVICE, "addresses": [], "public_key": KEY}, "addresses"),
    ({"name": "a", "device_id": DEVICE, "addresses": ["dynamic"], "public_key": "ed25519:AAAA"}, "32 bytes"),
    ({"name": "a", "device_id": DEVICE, "addresses": ["dynamic"]}, "does not decode"),
    (["not", "an", "object"], "does not decode"),
])
def test_bad_payloads_are_refused(payload, message):
    with pytest.raises(InviteError, match=message):
        decode_invite(_forge(payload))


def test_invite_addresses_turn_wildcards_into_discovery():
    assert invite_addresses(["tcp://127.0.0.1:22001"]) == ["tcp://127.0.0.1:22001"]
    assert invite_addresses(["default"]) == ["dynamic"]
    assert invite_addresses(["tcp://0.0.0.0:22000", "tcp://192.0.2.7:22000"]) == [
        "tcp://192.0.2.7:22000", "dynamic"]


def test_the_link_port_travels_when_fixed_and_a_bad_one_is_refused():
    assert decode_invite(_invite(link=22100).encode()).link == 22100
    plain = _invite().encode()
    assert decode_invite(plain).link is None and "link" not in json.loads(
        base64.urlsafe_b64decode(plain.split(".")[1] + "=="))  # codes without a link are as before
    good = dict(name="laptop", device_id=DEVICE, addresses=["tcp://127.0.0.1:22001"], public_key=KEY)
    for bad in (0, 70000, "22100", 22.5, True):
        with pytest.raises(InviteError, match="link port that is not a port number"):
            decode_invite(_forge({**good, "link": bad}))
