"""frame-hash-validator: a corpus of bad frames, each with its exact verdict code."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from folders import keys
from folders.frame import Frame, save_frame
from folders.errors import MAX_ECHO
from folders.frame import MAX_DEPTH
from folders.validator import VerdictCache, VerdictCode, validate_frame_bytes, validate_frame_file

LAPTOP = Ed25519PrivateKey.generate()
DESKTOP = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
TRUSTED = {"laptop": LAPTOP.public_key(), "desktop": DESKTOP.public_key()}
CREATED = datetime(2026, 11, 25, 8, 0, 0, tzinfo=timezone.utc)
MAX_SIZE = 64 * 1024
FRAME_ID = "notes/today"
REL = "notes/today.frame.json"


def good(**overrides) -> Frame:
    args = {"id": FRAME_ID, "author": "laptop", "body": {"text": "héllo", "n": [1, 2.5, None, True]},
            "key": LAPTOP, "created": CREATED, "parents": ("sha256:" + "0f" * 32,)}
    return Frame.create(**{**args, **overrides})


def document(**changes) -> dict:
    """The good frame's fields with `changes` applied and NOT re-signed."""
    return {**good().to_dict(), **changes}


def without(field: str) -> dict:
    data = good().to_dict()
    del data[field]
    return data


def signed_over(serialise: Callable[[dict], bytes], body: dict | None = None) -> dict:
    """A frame whose hash is honest sha256 of another serialisation, properly signed."""
    unsigned = good(**({"body": body} if body else {})).unsigned_dict()
    digest = "sha256:" + hashlib.sha256(serialise(unsigned)).hexdigest()
    return {**unsigned, "hash": digest, "sig": keys.sign(LAPTOP, digest.encode("ascii"))}


def write(root: Path, rel: str, data: bytes | dict | str) -> Path:
    if isinstance(data, dict):
        data = json.dumps(data).encode("utf-8")
    elif isinstance(data, str):
        data = data.encode("utf-8")
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def text_with(token: str) -> str:
    """The good frame's JSON with `"n": [...]` replaced by raw JSON text."""
    return good().to_bytes().decode("utf-8").replace('"n":[1,2.5,null,true]', f'"n":{token}')


def symlink(root: Path, rel: str, target: Path) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def outside_file(root: Path) -> Path:
    return write(root.parent / "outside", "today.frame.json", good().to_bytes())


def dangling_parent(root: Path) -> Path:
    write(root, "notes", b"a file where a folder should be")
    return root / REL


def fifo(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    os.mkfifo(root / REL)
    return root / REL


def directory(root: Path) -> Path:
    (root / REL).mkdir(parents=True)
    return root / REL


def linked_namespace(root: Path) -> Path:
    save_frame(root.parent / "elsewhere", good())
    (root / "notes").symlink_to(root.parent / "elsewhere" / "notes")
    return root / REL


def inner_link(root: Path) -> Path:
    target = save_frame(root, good(id="notes/real"))
    return symlink(root, REL, target)


B = VerdictCode
CORPUS: list[tuple[str, Callable[[Path], Path], VerdictCode]] = [
    # where the file is and what it is
    ("dotdot_in_path", lambda r: r / "notes" / ".." / ".." / "outside" / "today.frame.json", B.OUTSIDE_ROOT),
    ("path_outside_root", outside_file, B.OUTSIDE_ROOT),
    ("no_frame_suffix", lambda r: write(r, "notes/today.json", good().to_bytes()), B.BAD_NAME),
    ("frame_at_root_level", lambda r: write(r, "today.frame.json", good().to_bytes()), B.BAD_NAME),
    ("hidden_segment", lambda r: write(r, "notes/.today.frame.json", good().to_bytes()), B.BAD_NAME),
    ("bad_namespace", lambda r: write(r, "my notes/today.frame.json", good().to_bytes()), B.BAD_NAME),
    ("missing", lambda r: r / REL, B.NOT_FOUND),
    ("namespace_is_a_file", dangling_parent, B.NOT_FOUND),
    ("symlink_to_outside_file", lambda r: symlink(r, REL, outside_file(r)), B.SYMLINK_ESCAPE),
    ("symlink_inside_root", inner_link, B.SYMLINK_ESCAPE),
    ("symlinked_namespace", linked_namespace, B.SYMLINK_ESCAPE),
    ("directory_named_like_frame", directory, B.NOT_A_FILE),
    ("fifo_named_like_frame", fifo, B.NOT_A_FILE),
    # size and encoding
    ("huge", lambda r: write(r, REL, b" " * (MAX_SIZE + 1)), B.TOO_LARGE),
    ("empty", lambda r: write(r, REL, b""), B.EMPTY),
    ("utf8_bom", lambda r: write(r, REL, b"\xef\xbb\xbf" + good().to_bytes()), B.BOM),
    ("latin1", lambda r: write(r, REL, good().to_bytes().decode().encode("latin-1")), B.NOT_UTF8),
    ("utf16", lambda r: write(r, REL, good().to_bytes().decode().encode("utf-16")), B.NOT_UTF8),
    # JSON syntax
    ("truncated", lambda r: write(r, REL, good().to_bytes()[:-40]), B.BAD_JSON),
    ("trailing_garbage", lambda r: write(r, REL, good().to_bytes() + b"}"), B.BAD_JSON),
    ("nested_too_deep", lambda r: write(r, REL, text_with("[" * 20_000 + "]" * 20_000)), B.BAD_SCHEMA),
    ("nested_past_the_limit", lambda r: write(r, REL, text_with("[" * 100 + "]" * 100)), B.BAD_SCHEMA),
    ("integer_too_long", lambda r: write(r, REL, text_with("1" * 5000)), B.BAD_JSON),
    ("duplicate_key", lambda r: write(r, REL, '{"author":"laptop",' + good().to_bytes().decode()[1:]),
     B.DUPLICATE_KEY),
    ("duplicate_key_in_body", lambda r: write(r, REL, text_with('{"a":1,"a":2}')), B.DUPLICATE_KEY),
    ("array", lambda r: write(r, REL, b"[]"), B.NOT_OBJECT),
    ("string", lambda r: write(r, REL, b'"frame"'), B.NOT_OBJECT),
    # schema
    ("missing_field", lambda r: write(r, REL, without("parents")), B.BAD_SCHEMA),
    ("missing_sig", lambda r: write(r, REL, without("sig")), B.BAD_SCHEMA),
    ("extra_field", lambda r: write(r, REL, document(note="hi")), B.BAD_SCHEMA),
    ("version_2", lambda r: write(r, REL, document(twinsync=2)), B.BAD_SCHEMA),
    ("version_string", lambda r: write(r, REL, document(twinsync="1")), B.BAD_SCHEMA),
    ("version_bool", lambda r: write(r, REL, document(twinsync=True)), B.BAD_SCHEMA),
    ("version_float", lambda r: write(r, REL, document(twinsync=1.0)), B.BAD_SCHEMA),
    ("id_not_string", lambda r: write(r, REL, document(id=7)), B.BAD_SCHEMA),
    ("dotdot_in_id", lambda r: write(r, REL, document(id="notes/../today")), B.BAD_SCHEMA),
    ("absolute_id", lambda r: write(r, REL, document(id="/notes/today")), B.BAD_SCHEMA),
    ("author_not_string", lambda r: write(r, REL, document(author=["laptop"])), B.BAD_SCHEMA),
    ("author_empty", lambda r: write(r, REL, document(author="")), B.BAD_SCHEMA),
    ("created_number", lambda r: write(r, REL, document(created=1764057600)), B.BAD_SCHEMA),
    ("created_with_offset", lambda r: write(r, REL, document(created="2026-11-25T08:00:00+00:00")),
     B.BAD_SCHEMA),
    ("created_impossible", lambda r: write(r, REL, document(created="2026-02-30T08:00:00Z")), B.BAD_SCHEMA),
    ("parents_string", lambda r: write(r, REL, document(parents="sha256:" + "0f" * 32)), B.BAD_SCHEMA),
    ("parents_short_hash", lambda r: write(r, REL, document(parents=["sha256:abc"])), B.BAD_SCHEMA),
    ("parents_upper_hex", lambda r: write(r, REL, document(parents=["sha256:" + "0F" * 32])), B.BAD_SCHEMA),
    ("parents_md5", lambda r: write(r, REL, document(parents=["md5:" + "0f" * 16])), B.BAD_SCHEMA),
    ("body_list", lambda r: write(r, REL, document(body=[1, 2])), B.BAD_SCHEMA),
    ("body_null", lambda r: write(r, REL, document(body=None)), B.BAD_SCHEMA),
    ("hash_number", lambda r: write(r, REL, document(hash=12)), B.BAD_SCHEMA),
    ("nan", lambda r: write(r, REL, text_with("NaN")), B.BAD_SCHEMA),
    ("infinity", lambda r: write(r, REL, text_with("-Infinity")), B.BAD_SCHEMA),
    ("overflowing_float", lambda r: write(r, REL, text_with("1e999")), B.BAD_SCHEMA),
    ("lone_surrogate", lambda r: write(r, REL, text_with('"\\ud800"')), B.BAD_SCHEMA),
    # identity and integrity
    ("id_path_mismatch", lambda r: write(r, REL, good(id="notes/other").to_bytes()), B.ID_MISMATCH),
    ("body_edited_after_signing", lambda r: write(r, REL, document(body={"text": "edited"})), B.HASH_MISMATCH),
    ("hash_over_indent_2", lambda r: write(r, REL, signed_over(
        lambda d: json.dumps(d, indent=2, sort_keys=True).encode())), B.HASH_MISMATCH),
    ("hash_over_ascii_escapes", lambda r: write(r, REL, signed_over(
        lambda d: json.dumps(d, sort_keys=True, separators=(",", ":")).encode())), B.HASH_MISMATCH),
    ("hash_over_unsorted_keys", lambda r: write(r, REL, signed_over(
        lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode())), B.HASH_MISMATCH),
    ("hash_not_hex", lambda r: write(r, REL, document(hash="sha256:zz")), B.HASH_MISMATCH),
    # authenticity
    ("untrusted_author", lambda r: write(r, REL, good(author="stranger", key=STRANGER).to_bytes()),
     B.UNTRUSTED_AUTHOR),
    ("author_impersonation", lambda r: write(r, REL, good(key=DESKTOP).to_bytes()), B.BAD_SIGNATURE),
    ("trusted_author_untrusted_key", lambda r: write(r, REL, good(key=STRANGER).to_bytes()), B.BAD_SIGNATURE),
    ("signature_over_other_hash", lambda r: write(r, REL, document(sig=good(body={}).sig)), B.BAD_SIGNATURE),
    ("signature_garbage", lambda r: write(r, REL, document(sig="ed25519:!!")), B.BAD_SIGNATURE),
    ("signature_missing_prefix", lambda r: write(r, REL, document(sig=good().sig.removeprefix("ed25519:"))),
     B.BAD_SIGNATURE),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "frames").mkdir()
    return tmp_path / "frames"


@pytest.mark.parametrize(("build", "code"), [pytest.param(b, c, id=name) for name, b, c in CORPUS])
def test_bad_frame_gets_its_code_and_a_message_naming_it(root: Path, build, code: VerdictCode) -> None:
    path = build(root)
    verdict = validate_frame_file(root, path, TRUSTED, max_size=MAX_SIZE)
    assert (verdict.code, verdict.ok, verdict.frame) == (code, False, None), verdict.message
    shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    assert shown in verdict.message
    assert verdict.message.endswith(".") and "\n" not in verdict.message
    assert verdict.path == path


def test_corpus_is_large_and_distinct() -> None:
    assert len(CORPUS) >= 25 and len({name for name, _, _ in CORPUS}) == len(CORPUS)
    assert {code for _, _, code in CORPUS} == set(VerdictCode) - {VerdictCode.OK, VerdictCode.UNREADABLE}


def test_good_frame_is_ok(root: Path) -> None:
    frame = good()
    verdict = validate_frame_file(root, save_frame(root, frame), TRUSTED)
    assert (verdict.ok, verdict.code, verdict.frame) == (True, "ok", frame)
    assert REL in verdict.message


def test_deep_frame_and_relative_path_are_ok(root: Path) -> None:
    frame = good(id="a/b/c/d", author="desktop", key=DESKTOP)
    save_frame(root, frame)
    assert validate_frame_file(root, Path("a/b/c/d.frame.json"), TRUSTED).frame == frame


def test_non_canonical_bytes_with_a_correct_hash_are_accepted(root: Path) -> None:
    """Only the hash is canonical; whitespace on disk does not change what was signed."""
    path = write(root, REL, json.dumps(good().to_dict(), indent=2))
    assert validate_frame_file(root, path, TRUSTED).ok


@pytest.mark.parametrize(("build", "where"), [
    (lambda r: symlink(r, REL, outside_file(r)), "points outside"), (inner_link, "points inside"),
])
def test_symlink_messages_say_where_the_link_points(root: Path, build, where: str) -> None:
    assert where in validate_frame_file(root, build(root), TRUSTED).message


def test_unreadable_file(root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = save_frame(root, good())
    path.chmod(0)
    verdict = validate_frame_file(root, path, TRUSTED)
    assert verdict.code == "unreadable" and REL in verdict.message


def test_a_name_the_file_system_refuses_is_unreadable_not_an_exception(root: Path) -> None:
    (root / "notes").mkdir()
    rel = "notes/" + "x" * 300
    verdict = validate_frame_file(root, root / rel, TRUSTED, expected_id=FRAME_ID)
    assert verdict.code == "unreadable" and rel[:MAX_ECHO] + "… (306 characters)" in verdict.message
    assert len(verdict.message) < 250, "a long name is echoed cut, not in full"


def test_nesting_up_to_the_limit_is_accepted_and_past_it_named(root: Path) -> None:
    """The body is level 1 and "n" level 2, so MAX_DEPTH - 1 brackets reach the limit exactly."""
    write(root, REL, text_with("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)))
    assert validate_frame_file(root, root / REL, TRUSTED).code == "hash_mismatch", "parsed and counted"
    write(root, REL, text_with("[" * MAX_DEPTH + "]" * MAX_DEPTH))
    verdict = validate_frame_file(root, root / REL, TRUSTED)
    assert verdict.code == "bad_schema" and f"more than {MAX_DEPTH} levels deep" in verdict.message
    write(root, REL, text_with("[" * 100_000 + "]" * 100_000))
    assert f"more than {MAX_DEPTH} levels deep" in validate_frame_file(root, root / REL, TRUSTED).message


def test_bytes_get_the_same_verdict_as_the_file_they_would_become(root: Path) -> None:
    """`frame put` judges the bytes before writing them; the daemon judges the file after."""
    cases = {"good": good().to_bytes(), "huge": b" " * (MAX_SIZE + 1), "bom": b"\xef\xbb\xbf" + good().to_bytes(),
             "mismatch": good(id="notes/other").to_bytes(), "forged": good(key=DESKTOP).to_bytes(),
             "deep": text_with("[" * 20_000 + "]" * 20_000).encode()}
    for name, data in cases.items():
        write(root, REL, data)
        on_disk = validate_frame_file(root, Path(REL), TRUSTED, max_size=MAX_SIZE)
        before = validate_frame_bytes(Path(REL), data, TRUSTED, max_size=MAX_SIZE)
        assert (before.ok, before.code, before.message, before.frame) == (
            on_disk.ok, on_disk.code, on_disk.message, on_disk.frame), name
    assert validate_frame_bytes(Path("../x.frame.json"), good().to_bytes(), TRUSTED).code == "outside_root"


def test_conflict_copy_is_checked_as_the_frame_it_copies(root: Path) -> None:
    copy = write(root, "notes/today.frame.sync-conflict-20261125-080000-ABCDEFG.json", good().to_bytes())
    assert validate_frame_file(root, copy, TRUSTED).code == "bad_name"
    assert validate_frame_file(root, copy, TRUSTED, expected_id=FRAME_ID).ok
    assert validate_frame_file(root, copy, TRUSTED, expected_id="notes/other").code == "id_mismatch"
    assert validate_frame_file(root, copy, TRUSTED, expected_id="../x").code == "bad_name"


def test_cache_returns_the_same_verdict_for_an_unchanged_file(root: Path) -> None:
    cache = VerdictCache()
    path = save_frame(root, good())
    first = cache.validate(root, path, TRUSTED)
    assert first.ok and cache.validate(root, path, TRUSTED) is first


def test_cache_rechecks_a_file_rewritten_with_the_same_size_and_mtime(root: Path) -> None:
    """Syncthing gives a pulled file its source's mtime, so size and mtime alone can lie."""
    cache = VerdictCache()
    path = save_frame(root, good())
    before = os.stat(path)
    assert cache.validate(root, path, TRUSTED).ok
    data = path.read_bytes().replace(b"h\xc3\xa9llo", b"HELLO")
    data = data[:-1] + b" " * (before.st_size - len(data)) + b"\n"
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert cache.validate(root, path, TRUSTED).code == "hash_mismatch"


def test_cache_rechecks_an_atomically_replaced_file(root: Path) -> None:
    cache = VerdictCache()
    path = save_frame(root, good())
    assert cache.validate(root, path, TRUSTED).ok
    save_frame(root, good(key=DESKTOP))
    assert cache.validate(root, path, TRUSTED).code == "bad_signature"


def test_cache_rechecks_when_trust_changes(root: Path) -> None:
    cache = VerdictCache()
    path = save_frame(root, good())
    assert cache.validate(root, path, TRUSTED).ok
    assert cache.validate(root, path, {"desktop": DESKTOP.public_key()}).code == "untrusted_author"
    assert cache.validate(root, path, {"laptop": DESKTOP.public_key()}).code == "bad_signature"


def test_cache_rechecks_when_a_folder_becomes_a_link(root: Path) -> None:
    cache = VerdictCache()
    path = save_frame(root, good())
    assert cache.validate(root, path, TRUSTED).ok
    (root / "notes").rename(root / "moved")
    (root / "notes").symlink_to(root / "moved")
    assert cache.validate(root, path, TRUSTED).code == "symlink_escape"


def test_cache_does_not_keep_missing_files(root: Path) -> None:
    cache = VerdictCache()
    path = root / REL
    assert cache.validate(root, path, TRUSTED).code == "not_found"
    save_frame(root, good())
    assert cache.validate(root, path, TRUSTED).ok

