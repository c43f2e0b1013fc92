"""Frame model: canonical JSON, hash and signature round trips, ids and paths."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from folders.errors import MAX_ECHO, FrameError, echo
from folders.frame import (
    FRAME_SUFFIX,
    MAX_DEPTH,
    Frame,
    canonical_json,
    check_frame_id,
    frame_path,
    save_frame,
)

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
CREATED = datetime(2026, 11, 25, 8, 0, 0, tzinfo=timezone.utc)
PARENT = "sha256:" + "ab" * 32

json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


def make(body: dict | None = None, **overrides) -> Frame:
    args = {"id": "notes/today", "author": "laptop", "body": {"text": "hi"} if body is None else body,
            "key": KEY, "created": CREATED, "parents": (PARENT,)}
    return Frame.create(**{**args, **overrides})


@settings(max_examples=60, deadline=None)
@given(body=bodies)
def test_create_to_bytes_parse_verify_round_trip(body: dict) -> None:
    frame = make(body)
    parsed = Frame.from_dict(json.loads(frame.to_bytes()))
    assert parsed == frame
    assert parsed.verify(KEY.public_key())
    assert parsed.to_bytes() == frame.to_bytes()


@settings(max_examples=60, deadline=None)
@given(body=bodies, seed=st.integers(0, 2**32))
def test_canonical_json_ignores_key_order(body: dict, seed: int) -> None:
    assert canonical_json(body) == canonical_json(_shuffled(body, random.Random(seed)))


def _shuffled(value, rng: random.Random):
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


MUTATIONS = {
    "id": lambda f: replace(f, id="notes/tomorrow"),
    "author": lambda f: replace(f, author="desktop"),
    "created": lambda f: replace(f, created="2026-11-25T08:00:01Z"),
    "parents": lambda f: replace(f, parents=()),
    "body": lambda f: replace(f, body={**f.body, "__mutated__": 1}),
    "hash": lambda f: replace(f, hash="sha256:" + "00" * 32),
    "sig": lambda f: replace(f, sig=make(key=OTHER_KEY).sig),
}


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_any_single_mutated_field_fails_verification(field: str) -> None:
    assert not MUTATIONS[field](make()).verify(KEY.public_key())


@settings(max_examples=40, deadline=None)
@given(body=bodies, field=st.sampled_from(sorted(MUTATIONS)))
def test_mutations_fail_for_any_body(body: dict, field: str) -> None:
    assert not MUTATIONS[field](make(body)).verify(KEY.public_key())


def test_wrong_key_fails_verification() -> None:
    assert not make().verify(OTHER_KEY.public_key())


def test_on_disk_form_is_canonical_json_and_newline() -> None:
    data = make({"b": [1, 2.5], "a": "é"}).to_bytes()
    assert data == canonical_json(json.loads(data)) + b"\n"
    assert '"body":{"a":"é","b":[1,2.5]}' in data.decode("utf-8")


def test_hash_covers_canonical_json_of_all_fields_but_hash_and_sig() -> None:
    frame = make()
    unsigned = {k: v for k, v in json.loads(frame.to_bytes()).items() if k not in ("hash", "sig")}
    assert frame.hash == "sha256:" + hashlib.sha256(canonical_json(unsigned)).hexdigest()


def test_created_is_utc_seconds_whatever_the_zone() -> None:
    later = datetime(2026, 11, 25, 10, 0, 0, 999, tzinfo=timezone(timedelta(hours=2)))
    assert make(created=later).created == "2026-11-25T08:00:00Z"
    with pytest.raises(ValueError):
        make(created=datetime(2026, 11, 25))


def test_created_defaults_to_now() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    created = datetime.strptime(make(created=None).created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= created <= datetime.now(timezone.utc)


@pytest.mark.parametrize("body", [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}])
def test_create_refuses_what_json_cannot_carry(body: dict) -> None:
    with pytest.raises(FrameError, match="canonical JSON"):
        make(body)


@pytest.mark.parametrize("overrides", [
    {"id": "../x"}, {"author": "bad name"}, {"parents": ("sha256:xyz",)}, {"body": ["not", "an", "object"]},
])
def test_create_refuses_bad_fields(overrides: dict) -> None:
    with pytest.raises(FrameError):
        make(**overrides)


@pytest.mark.parametrize("frame_id", ["ns/name", "a/b/c", "A1/b.c_d-e", "/".join(["s"] * 8), "n/" + "x" * 128])
def test_good_ids(frame_id: str) -> None:
    assert check_frame_id(frame_id) == frame_id


@pytest.mark.parametrize("frame_id", [
    "", "name", "/ns/name", "ns/../name", "../ns/name", "ns/./name", "ns//name", "ns/name/", "ns/.hidden",
    "ns/-dash", "ns/sp ace", "ns\\name", "/".join(["s"] * 9), "n/" + "x" * 129, "ns/né",
    "ns/a.sync-conflict-20261125-080000-ABCDEFG",
])
def test_bad_ids(frame_id: str) -> None:
    with pytest.raises(FrameError, match="Frame id"):
        check_frame_id(frame_id)


def test_frame_path_of_an_id(tmp_path: Path) -> None:
    path = frame_path(tmp_path, "a/b/c")
    assert path == tmp_path / "a" / "b" / ("c" + FRAME_SUFFIX)


def test_save_frame_writes_canonical_bytes_at_its_path(tmp_path: Path) -> None:
    frame = make(id="deep/er/name")
    path = save_frame(tmp_path, frame)
    assert path == tmp_path / "deep" / "er" / "name.frame.json"
    assert path.read_bytes() == frame.to_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["name.frame.json"]


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("sig"),
    lambda d: d.update(extra=1),
    lambda d: d.update(twinsync=2),
    lambda d: d.update(twinsync=True),
    lambda d: d.update(hash=1),
    lambda d: d.update(sig=None),
    lambda d: d.update(created="2026-02-30T00:00:00Z"),
])
def test_from_dict_refuses_bad_documents(mutate) -> None:
    document = make().to_dict()
    mutate(document)
    with pytest.raises(FrameError):
        Frame.from_dict(document)


def test_from_dict_refuses_non_objects() -> None:
    with pytest.raises(FrameError, match="JSON object"):
        Frame.from_dict([])  # type: ignore[arg-type]


def _nested(levels: int) -> dict:
    """A body `levels` objects deep, built without recursion."""
    body: dict = {}
    for _ in range(levels - 1):
        body = {"a": body}
    return body


def test_bodies_nest_up_to_max_depth_and_no_further() -> None:
    assert Frame.create("notes/deep", "laptop", _nested(MAX_DEPTH), KEY).verify(KEY.public_key())
    for levels in (MAX_DEPTH + 1, 5_000, 100_000):
        with pytest.raises(FrameError, match=f"nested more than {MAX_DEPTH} levels deep"):
            Frame.create("notes/deep", "laptop", _nested(levels), KEY)


def test_canonical_json_of_a_document_too_deep_for_python_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="nested more than"):
        canonical_json(_nested(100_000))


def test_a_long_id_is_echoed_once_and_cut() -> None:
    """A 5,000-character id used to be echoed twice in full: 10 KB of output for one mistake."""
    for frame_id in ("notes/" + "x" * 5000, "n" * 5000, "notes/" + "é" * 5000 + "/x"):
        with pytest.raises(FrameError) as raised:
            check_frame_id(frame_id)
        message = str(raised.value)
        assert len(message) < 2 * MAX_ECHO + 250, message
        assert "characters)" in message


def test_echo_escapes_and_cuts() -> None:
    assert echo("notes/today") == "'notes/today'"
    assert echo("a\nb") == "'a\\nb'", "a newline cannot break a one-line message"
    assert echo("x" * 5000) == "'" + "x" * (MAX_ECHO - 1) + "… (5000 characters)"
    assert echo("some/path", quoted=False) == "some/path"
