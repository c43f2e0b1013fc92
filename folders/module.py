"""Reasoning modules: code that travels between nodes in `twinsync-modules`, and must be
proven to be exactly what its author signed before anyone may even be asked to approve it.

A module is a directory `<name>/` holding its files and `module.json`, a manifest signed
the way frames are (`folders.frame.document_hash` over canonical JSON, the signature over
the hash, by the author's node key). The manifest lists the sha256 of every file, so one
signature covers the whole directory: a file changed, added or swapped for a link on any
disk on the way is found by `check_module`, which reads the directory without following a
single link. Every refusal is a `ModuleError` with a stable `code` and one sentence.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from folders import keys
from folders.errors import TwinsyncError, echo
from folders.frame import canonical_json, document_hash, format_created, json_kind

FORMAT_VERSION = 1
MANIFEST_NAME = "module.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 500
MAX_SERVES = 50
FIELDS = frozenset({"twinsync", "name", "version", "author", "created", "entry", "serves", "files",
                    "hash", "sig"})
#: Stable refusal codes, stored in state.db and shown in the queue; never rename one.
CODES = ("too_large", "bad_manifest", "wrong_name", "bad_path", "bad_hash", "untrusted_author",
         "wrong_author", "bad_signature", "link", "not_a_file", "unlisted", "missing", "file_mismatch",
         "unreadable")

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}")
_AUTHOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_PYTHON_ENTRY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


class ModuleError(TwinsyncError):
    """A module that may not be used; `code` is one of CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Manifest:
    """module.json: build new ones with `Manifest.create`, read ones with `from_dict`."""

    name: str
    version: str
    author: str
    created: str
    entry: str
    serves: tuple[str, ...]
    files: dict[str, str] = field(hash=False)  # relative path -> sha256:<hex>
    hash: str
    sig: str

    @classmethod
    def create(cls, *, name: str, version: str, author: str, entry: str, serves: Iterable[str],
               files: Mapping[str, str], key: Ed25519PrivateKey, created: datetime | None = None) -> Manifest:
        unsigned = {"twinsync": FORMAT_VERSION, "name": name, "version": version, "author": author,
                    "created": format_created(created or datetime.now(timezone.utc)), "entry": entry,
                    "serves": list(serves), "files": dict(sorted(files.items()))}
        _check_fields(unsigned)
        digest = document_hash(unsigned)
        return cls(name, version, author, unsigned["created"], entry, tuple(unsigned["serves"]),
                   unsigned["files"], digest, keys.sign(key, digest.encode("ascii")))

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise ModuleError("bad_manifest", f"{MANIFEST_NAME} must hold a JSON object, not {json_kind(data)}.")
        missing, extra = FIELDS - data.keys(), data.keys() - FIELDS
        if missing or extra:
            raise ModuleError("bad_manifest", f"{MANIFEST_NAME} has exactly the fields {', '.join(sorted(FIELDS))}; "
                              f"missing: {', '.join(sorted(missing)) or 'none'}, "
                              f"unexpected: {', '.join(sorted(map(str, extra)))[:200] or 'none'}.")
        _check_fields(data)
        if not all(isinstance(data[k], str) for k in ("hash", "sig")):
            raise ModuleError("bad_manifest", f"{MANIFEST_NAME}'s hash and sig must be texts.")
        return cls(data["name"], data["version"], data["author"], data["created"], data["entry"],
                   tuple(data["serves"]), dict(data["files"]), data["hash"], data["sig"])

    def unsigned_dict(self) -> dict[str, Any]:
        return {"twinsync": FORMAT_VERSION, "name": self.name, "version": self.version, "author": self.author,
                "created": self.created, "entry": self.entry, "serves": list(self.serves),
                "files": dict(self.files)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.unsigned_dict(), "hash": self.hash, "sig": self.sig}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict()) + b"\n"

    @property
    def is_python(self) -> bool:
        """`package.module:function` rather than a program among the module's files."""
        return ":" in self.entry


def _check_fields(data: Mapping[str, Any]) -> None:
    """Shape of a manifest, for `create` (our bugs) and `from_dict` (peers' files)."""
    def bad(message: str) -> ModuleError:
        return ModuleError("bad_manifest", message)

    if type(data["twinsync"]) is not int or data["twinsync"] != FORMAT_VERSION:
        raise bad(f"The module format version is {echo(data['twinsync'])}; this twinsync reads {FORMAT_VERSION}.")
    if not isinstance(data["name"], str) or not NAME_RE.fullmatch(data["name"]):
        raise bad(f"Module name {echo(data['name'])} is not allowed; use 1-63 lowercase letters, digits, '-' or '_'.")
    if not isinstance(data["version"], str) or not _VERSION.fullmatch(data["version"]):
        raise bad(f"Module version {echo(data['version'])} is not allowed; use letters, digits, '.', '+', '-', "
                  "like '1.2.0'.")
    if not isinstance(data["author"], str) or not _AUTHOR.fullmatch(data["author"]):
        raise bad(f"Module author {echo(data['author'])} is not a node name.")
    if not isinstance(data["created"], str) or not _CREATED.fullmatch(data["created"]):
        raise bad(f"Module field 'created' is {echo(data['created'])}; it must look like 2026-11-25T08:00:00Z.")
    serves = data["serves"]
    if (not isinstance(serves, list) or len(serves) > MAX_SERVES
            or not all(isinstance(s, str) and 0 < len(s) <= 200 for s in serves)):
        raise bad(f"Module field 'serves' must be a list of at most {MAX_SERVES} goals or namespaces "
                  "(texts of 1-200 characters).")
    files = data["files"]
    if not isinstance(files, dict) or not files or len(files) > MAX_FILES:
        raise bad(f"Module field 'files' must map 1 to {MAX_FILES} file paths to their sha256.")
    for path, digest in files.items():
        check_module_path(path)
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise bad(f"The hash of {echo(path)} is {echo(digest)}, not 'sha256:<64 lowercase hex>'.")
    entry = data["entry"]
    if not isinstance(entry, str) or not (_PYTHON_ENTRY.fullmatch(entry) or entry in files):
        raise bad(f"Module entry {echo(entry)} is neither one of its files nor a Python 'package.module:function'.")


def check_module_path(path: Any) -> str:
    """A file path inside a module: relative, no '..', no hidden or odd names, never the
    manifest itself, so it cannot climb out of the module or pass for something else."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise ModuleError("bad_path", f"Module file path {echo(path)} is not a relative path like 'pkg/main.py'.")
    parts = PurePosixPath(path).parts
    if path != "/".join(parts) or len(parts) > 8 or not all(_PART.fullmatch(p) and p != ".." for p in parts):
        raise ModuleError("bad_path", f"Module file path {echo(path)} is not allowed; each part must start with a "
                          "letter, digit or '_' and use letters, digits, '.', '_', '-' (no '..').")
    if path == MANIFEST_NAME:
        raise ModuleError("bad_path", f"A module may not list {MANIFEST_NAME} among its files.")
    return path


def file_digest(path: Path) -> str:
    """sha256 of a file opened without following a link, read at most MAX_FILE_BYTES + 1."""
    return "sha256:" + hashlib.sha256(_read(path, MAX_FILE_BYTES)).hexdigest()


def _read(path: Path, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        code = "link" if os.path.islink(path) else "unreadable"
        raise ModuleError(code, f"Cannot read {path} ({exc.strerror}); "
                          + ("a module may not hold links." if code == "link" else "check its permissions.")) from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ModuleError("not_a_file", f"{path} is not a regular file; a module holds only files.")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ModuleError("too_large", f"{path} is larger than {limit} bytes; keep module files small.")
    return data


def collect_files(directory: Path) -> dict[str, str]:
    """Every file under `directory` (but a manifest, hidden names and __pycache__), for
    publishing; a link or anything but a file is refused, not skipped."""
    files: dict[str, str] = {}
    for rel, kind in _walk(Path(directory)):
        if kind == "dir":
            continue
        if rel == MANIFEST_NAME:
            continue
        files[check_module_path(rel)] = file_digest(Path(directory) / rel)
        if len(files) > MAX_FILES:
            raise ModuleError("too_large", f"{directory} holds more than {MAX_FILES} files; a module may not.")
    return files


def _walk(top: Path) -> list[tuple[str, str]]:
    """(relative path, "dir" | "file") of everything under `top` but hidden names and
    __pycache__ (temp files in transfer, caches: never listed, so never committed or run);
    links are never followed: a link or special file anywhere raises, naming it."""
    found: list[tuple[str, str]] = []
    todo = [top]
    while todo:
        current = todo.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise ModuleError("unreadable", f"Cannot list {current} ({exc.strerror}); check its permissions.") from None
        for entry in entries:
            rel = Path(entry.path).relative_to(top).as_posix()
            if entry.is_symlink():
                raise ModuleError("link", f"{entry.path} is a link (to {echo(os.readlink(entry.path))}); "
                                  "a module may not hold links.")
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue  # Syncthing's and our temp files, caches: never listed, never run
            if entry.is_dir(follow_symlinks=False):
                found.append((rel, "dir"))
                todo.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                found.append((rel, "file"))
            else:
                raise ModuleError("not_a_file", f"{entry.path} is not a regular file; a module holds only files.")
            if len(found) > 4 * MAX_FILES:
                raise ModuleError("too_large", f"{top} holds more than {MAX_FILES} files; a module may not.")
    return found


def read_manifest(directory: Path) -> Manifest:
    """The manifest's shape only; `check_module` decides whether it may be trusted."""
    raw = _read(Path(directory) / MANIFEST_NAME, MAX_MANIFEST_BYTES)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModuleError("bad_manifest", f"{Path(directory) / MANIFEST_NAME} is not JSON; publish the module "
                          "again with `twinsync module publish`.") from None
    return Manifest.from_dict(data)


def verify_manifest(manifest: Manifest, trusted: Mapping[str, Ed25519PublicKey]) -> None:
    """The hash recomputes and the author named is the one who signed."""
    if document_hash(manifest.unsigned_dict()) != manifest.hash:
        raise ModuleError("bad_hash", f"Module {manifest.name}'s manifest does not match its hash; it was "
                          "edited after it was signed.")
    public = trusted.get(manifest.author)
    if public is not None and keys.verify(public, manifest.hash.encode("ascii"), manifest.sig):
        return
    signer = next((n for n, k in sorted(trusted.items()) if keys.verify(k, manifest.hash.encode("ascii"), manifest.sig)),
                  None)
    if signer is not None:
        raise ModuleError("wrong_author", f"Module {manifest.name} claims {manifest.author} as its author but "
                          f"was signed by {signer}; it is refused.")
    if public is None:
        raise ModuleError("untrusted_author", f"Module {manifest.name} is signed by {echo(manifest.author)}, "
                          "a node this one does not trust; pair with it first if it should be trusted.")
    raise ModuleError("bad_signature", f"Module {manifest.name}'s signature is not {manifest.author}'s; it is refused.")


def check_module(directory: Path, trusted: Mapping[str, Ed25519PublicKey]) -> Manifest:
    """The whole module-hash check: the directory is no link, the manifest parses, names
    its directory, is signed by the trusted author it names, and lists exactly the files
    there, each with its hash. Returns the manifest, or raises ModuleError."""
    directory = Path(directory)
    if directory.is_symlink():
        raise ModuleError("link", f"{directory} is a link; a module must be a directory of its own.")
    manifest = read_manifest(directory)
    if manifest.name != directory.name:
        raise ModuleError("wrong_name", f"{directory / MANIFEST_NAME} names module {manifest.name!r}, "
                          f"but it sits in {directory.name!r}.")
    verify_manifest(manifest, trusted)
    present = {rel for rel, kind in _walk(directory) if kind == "file"} - {MANIFEST_NAME}
    unlisted = sorted(present - manifest.files.keys())
    if unlisted:
        raise ModuleError("unlisted", f"{directory / unlisted[0]} is not listed in the manifest of "
                          f"{manifest.name} {manifest.version}; nothing of the module runs until it is gone.")
    missing = sorted(manifest.files.keys() - present)
    if missing:
        raise ModuleError("missing", f"{directory / missing[0]} is listed in the manifest of {manifest.name} "
                          f"{manifest.version} but is not there (yet).")
    for rel, digest in sorted(manifest.files.items()):
        if file_digest(directory / rel) != digest:
            raise ModuleError("file_mismatch", f"{directory / rel} differs from what {manifest.author} signed "
                              f"for {manifest.name} {manifest.version}; nothing of the module runs.")
    return manifest


def file_changes(old: Manifest | None, new: Manifest) -> dict[str, list[str]]:
    """Files added, removed and changed from `old` to `new`, for the queue's summary."""
    before = old.files if old else {}
    return {"added": sorted(new.files.keys() - before.keys()),
            "removed": sorted(before.keys() - new.files.keys()),
            "changed": sorted(p for p in new.files.keys() & before.keys() if new.files[p] != before[p])}
