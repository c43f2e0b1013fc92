"""Manifests: the small signed JSON file beside every segment and snapshot .db.

A manifest is written after its .db, so a peer never reads a manifest whose file is half
written, and it carries the .db's sha256 under the node's signature: that signature is
what binds every step in the file to its node (steps are not signed one by one, DESIGN §7).

One reader for both kinds: `load_manifest` refuses anything that is not a small regular
file holding a JSON object with exactly the expected fields, before it parses a byte of
it, so a directory, a FIFO or a link named like a manifest is refused with its reason and
never blocks, nor a `created` that is not a UTC time. `check_signed_file` does the checks
both kinds share, cheap first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.errors import TraceError, echo
from folders.trace import canonical_json, format_ts, parse_ts

#: A manifest is a few hundred bytes; anything much larger is not one of ours.
MANIFEST_MAX_BYTES = 64 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class SegmentError(TraceError):
    """A segment or snapshot was refused; `code` is stable so a caller can wait or refuse."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def regular_file_problem(path: Path) -> str | None:
    """Why `path` is not a regular file we may open (without following a link), or None.

    Checked with lstat before any open: opening a FIFO would block, a link may point
    anywhere on this machine, and a directory is no file at all."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "is a symbolic link, not a file"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a file"
    return "is a special file, not a regular file"


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; OSError or ValueError otherwise.

    O_NOFOLLOW|O_NONBLOCK: a link or a FIFO swapped in after the lstat still never blocks
    or leads outside the folder."""
    problem = regular_file_problem(path)
    if problem:
        raise ValueError(problem)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError("is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is larger than {limit // 1024} KiB, too large to be a manifest")
    return data


def load_manifest(path: Path, fields: frozenset[str] | set[str],
                  bad: Callable[[str], SegmentError], optional: frozenset[str] = frozenset()) -> dict:
    """A manifest's JSON, small and with exactly `fields`, plus any of `optional` (fields
    a newer twinsync added; an older one refuses them); `bad(why)` makes the error."""
    try:
        data = read_small_file(path, MANIFEST_MAX_BYTES)
    except ValueError as exc:
        raise bad(str(exc)) from None
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror})") from None
    if not data.strip():
        raise bad("is empty")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("cannot be read as JSON") from None
    if not isinstance(manifest, dict) or not fields <= set(manifest) <= fields | optional:
        also = f" (and optionally {', '.join(sorted(optional))})" if optional else ""
        raise bad(f"does not have exactly the fields {', '.join(sorted(fields))}{also}")
    if "created" in fields and not _is_utc_stamp(manifest["created"]):
        raise bad("has a created time that is not a UTC time like 2026-11-25T08:00:00.000000Z")
    return manifest


def _is_utc_stamp(value: object) -> bool:
    """Whether `value` is a time as format_ts writes it: checked here, on reading, because
    merge, latency and retention parse it later and a signed "soon" would crash them."""
    try:
        return isinstance(value, str) and format_ts(parse_ts(value)) == value
    except ValueError:
        return False


def file_sha256(path: Path) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_signed_file(manifest_path: Path, manifest: Mapping, trusted: Mapping[str, Ed25519PublicKey],
                      kind: str, again: str, digest: Callable[[Path], str] = file_sha256) -> Path:
    """The checks segments and snapshots share, cheap first: a trusted node, its signature,
    then the file it names, present, a regular file and with the signed sha256 (`digest`: a
    restore copies the file and hashes the bytes it wrote, so it reads the file once)."""
    node = manifest["node"]
    public = trusted.get(node)
    if public is None:
        raise SegmentError("untrusted_node", f"{kind} manifest {manifest_path} comes from "
                           f"{echo(node)}, which is not in trusted.toml; add the node or remove the file.")
    if not manifest_signature_ok(manifest, public):
        raise SegmentError("bad_signature", f"The signature of {kind.lower()} manifest {manifest_path} "
                           f"does not verify with {node}'s key; it was altered or forged, remove it.")
    db_path = manifest_path.with_name(manifest["file"])
    problem = regular_file_problem(db_path)
    if problem == "is missing":
        raise SegmentError("missing_file", f"{kind} {db_path} named by {manifest_path} is not "
                           "here yet; wait for Syncthing to finish and try again.")
    if problem:
        raise SegmentError("not_a_file", f"{kind} {db_path} {problem}; remove it and ask "
                           f"{node} to {again}.")
    try:
        same = digest(db_path) == manifest["sha256"]
    except OSError as exc:
        raise SegmentError("missing_file", f"{kind} {db_path} cannot be read yet ({exc}); wait "
                           "for Syncthing to finish and try again.") from None
    if not same:
        raise SegmentError("sha_mismatch", f"{kind} {db_path} does not match the sha256 in its "
                           f"manifest; it is incomplete or altered, wait for Syncthing or ask "
                           f"{node} to {again}.")
    return db_path


def sign_manifest(manifest: Mapping[str, object], key: Ed25519PrivateKey) -> dict[str, object]:
    """A copy of `manifest` whose "sig" is the node's signature over canonical JSON of the rest."""
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    return {**unsigned, "sig": keys.sign(key, canonical_json(unsigned))}


def manifest_signature_ok(manifest: Mapping[str, object], public: Ed25519PublicKey) -> bool:
    """True when the manifest's "sig" verifies with `public` over everything else in it."""
    unsigned = {k: v for k, v in manifest.items() if k != "sig"}
    signature = manifest.get("sig")
    return isinstance(signature, str) and keys.verify(public, canonical_json(unsigned), signature)


def manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    """How manifests are written: indented, sorted, one trailing newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
