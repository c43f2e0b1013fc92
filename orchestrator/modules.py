"""Reasoning modules on this node (DESIGN §9): publish, notice, approve, run.

Code that arrives from another machine never runs by itself. Every module version that
passes `folders.module.check_module` is committed to modules.git and queued as *awaiting*
approval; one that fails is queued as *refused* with its code and sentence, and nothing of
it is committed or run. A person on this node approves an exact version (its manifest
hash); the approved version is checked out of modules.git into modules.run/ (private, never
synced) and runs from there, so a peer that changes files in the synced folder changes
nothing that runs. Approving an older version again rolls back to it.

Statuses of a version here: awaiting, approved (the one that runs), superseded (approved
once, replaced by another approval), rejected, refused (one row per module name, open while
its directory fails the checks).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from folders.errors import TwinsyncError, echo
from folders.files import TEMP_PREFIX, write_atomic
from folders.gitstore import FrameRepo, Revision
from folders.layout import NodeLayout
from folders.module import (MANIFEST_NAME, NAME_RE, Manifest, ModuleError, check_module, collect_files,
                            file_changes, file_digest)
from folders.trace import utc_now
from orchestrator.lock import modules_lock
from orchestrator.node import Node
from orchestrator.sandbox import Program
from orchestrator.state import open_state, stamp
from syncthing.errors import SyncthingError
from syncthing.folderspec import IGNORE_PATTERNS, MODULES_FOLDER_ID, modules_folder, with_device

logger = logging.getLogger(__name__)

AWAITING, APPROVED, SUPERSEDED, REJECTED, REFUSED = "awaiting", "approved", "superseded", "rejected", "refused"
#: A Python entry `package.module:function` runs through this: the function gets the request
#: and returns the answer, which is printed as the protocol's JSON (orchestrator/reasoner.py).
_PYTHON_RUNNER = (
    "import importlib, json, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "name, _, function = sys.argv[2].partition(':')\n"
    "request = json.load(sys.stdin)\n"
    "answer = getattr(importlib.import_module(name), function)(request)\n"
    "sys.stdout.write(json.dumps(answer))\n"
)


class ModuleQueueError(TwinsyncError):
    """A module or version that is not there, or cannot take the asked decision."""


@dataclass(frozen=True)
class ModuleVersion:
    """One version of a module as this node knows it (a row of state.db's `modules`)."""

    id: int
    name: str
    version: str | None
    hash: str | None
    author: str | None
    entry: str | None
    serves: tuple[str, ...]
    commit: str | None
    status: str
    code: str | None
    reason: str | None
    created: str
    decided_by: str | None
    decided_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModuleVersion:
        return cls(row["id"], row["name"], row["version"], row["hash"], row["author"], row["entry"],
                   tuple(json.loads(row["serves"] or "[]")), row["commit_sha"], row["status"], row["code"],
                   row["reason"], row["created"], row["decided_by"], row["decided_at"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "hash": self.hash, "author": self.author,
                "entry": self.entry, "serves": list(self.serves), "commit": self.commit, "status": self.status,
                "code": self.code, "reason": self.reason, "created": self.created,
                "decided_by": self.decided_by, "decided_at": self.decided_at}

    @property
    def label(self) -> str:
        return f"module {self.name} {self.version}"


@dataclass(frozen=True)
class ModuleSummary:
    """A module name on this node: what runs, what waits for a person, why it is refused."""

    name: str
    running: ModuleVersion | None
    awaiting: tuple[ModuleVersion, ...]
    refused: ModuleVersion | None

    @property
    def state(self) -> str:
        if self.refused is not None:
            return f"refused ({self.refused.code})"
        if self.awaiting:
            return "awaiting approval"
        return "running" if self.running else "not approved"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state,
                "running": self.running.to_dict() if self.running else None,
                "awaiting": [v.to_dict() for v in self.awaiting],
                "refused": self.refused.to_dict() if self.refused else None}


@dataclass(frozen=True)
class ModuleDetail:
    """`module show`: the version a person is asked about, its files, and what changed
    since the approved one (a unified diff from modules.git)."""

    summary: ModuleSummary
    subject: ModuleVersion | None
    files: dict[str, str]
    changes: dict[str, list[str]]
    diff: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "subject": self.subject.to_dict() if self.subject else None,
                "files": self.files, "changes": self.changes, "diff": self.diff}


# -- the modules folder and its history -------------------------------------------------

def ensure_modules_home(layout: NodeLayout) -> None:
    """modules.shared/ and modules.git/ for a home made before modules existed."""
    layout.modules_shared.mkdir(exist_ok=True)
    if not layout.modules_git.exists():
        FrameRepo.create(layout.modules_git, layout.modules_shared).close()


def share_modules(node: Node, device_id: str) -> None:
    """Add a peer to twinsync-modules (made here first when the home predates modules)."""
    ensure_modules_home(node.layout)
    folder = node.client.folder(MODULES_FOLDER_ID)
    if folder is None:
        node.client.put_folder(modules_folder(node.layout.modules_shared, [node.config.device_id, device_id]))
        node.client.set_ignores(MODULES_FOLDER_ID, IGNORE_PATTERNS)
    else:
        node.client.patch_folder(MODULES_FOLDER_ID, {"devices": with_device(folder, device_id)})


def _repo(node: Node) -> FrameRepo:
    ensure_modules_home(node.layout)
    return FrameRepo(node.layout.modules_git)


# -- noticing what arrived ----------------------------------------------------------------

@dataclass
class ScanReport:
    queued: list[str]  # "name version" newly awaiting approval
    refused: list[str]  # "name: code"
    unchanged: int

    def summary(self) -> str:
        return (f"{len(self.queued)} new version(s) awaiting approval, {len(self.refused)} refused, "
                f"{self.unchanged} unchanged")


def scan(node: Node, *, clock: Callable[[], datetime] = utc_now) -> ScanReport:
    """Check every module directory in modules.shared/: a valid new version is committed and
    queued, an invalid one is queued as refused (and logged once per reason); a directory
    that is valid again, or gone, closes its refusal."""
    report = ScanReport([], [], 0)
    trusted = node.trusted_keys()
    with modules_lock(node.layout.home), _repo(node) as repo:
        db = open_state(node.layout.state_db)
        try:
            names = sorted(p.name for p in node.layout.modules_shared.iterdir()
                           if not p.name.startswith(".") and (p.is_dir() or p.is_symlink()))
            for name in names:
                directory = node.layout.modules_shared / name
                try:
                    manifest = check_module(directory, trusted)
                except ModuleError as exc:
                    if _refuse(db, name, exc, clock):
                        report.refused.append(f"{name}: {exc.code}")
                        logger.warning("module %s refused (%s): %s", name, exc.code, exc)
                    continue
                _close_refusal(db, name)
                if _known(db, name, manifest.hash):
                    report.unchanged += 1
                    continue
                commit = _commit(repo, manifest, clock)
                _insert(db, manifest, commit, AWAITING, clock)
                report.queued.append(f"{name} {manifest.version}")
                logger.info("module %s %s by %s is awaiting approval on %s", name, manifest.version,
                            manifest.author, node.name)
            for gone in _open_refusals(db) - set(names):
                _close_refusal(db, gone)
        finally:
            db.close()
    return report


def _refuse(db, name: str, exc: ModuleError, clock) -> bool:
    """One open refusal per name, updated in place; True when its reason is new."""
    row = db.execute("SELECT id, reason FROM modules WHERE name = ? AND status = ?", [name, REFUSED]).fetchone()
    if row is not None:
        if row[1] == str(exc):
            return False
        db["modules"].update(row[0], {"code": exc.code, "reason": str(exc), "created": stamp(clock())})
        return True
    db["modules"].insert({"name": name, "status": REFUSED, "code": exc.code, "reason": str(exc),
                          "created": stamp(clock()), "serves": "[]"})
    return True


def _close_refusal(db, name: str) -> None:
    db.execute("DELETE FROM modules WHERE name = ? AND status = ?", [name, REFUSED])


def _open_refusals(db) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM modules WHERE status = ?", [REFUSED])}


def _known(db, name: str, digest: str) -> bool:
    return db.execute("SELECT 1 FROM modules WHERE name = ? AND hash = ?", [name, digest]).fetchone() is not None


def _commit(repo: FrameRepo, manifest: Manifest, clock) -> str:
    """Commit exactly the listed files and the manifest (files of an older version that are
    gone are removed); returns the commit that holds this version."""
    name = manifest.name
    old = [p for p in repo.tracked() if p.startswith(f"{name}/")]
    paths = [f"{name}/{MANIFEST_NAME}", *(f"{name}/{rel}" for rel in manifest.files), *old]
    commit = repo.commit(paths, f"module {name} {manifest.version} ({manifest.hash[:19]})\n", manifest.author,
                         when=clock())
    return commit or repo.log(f"{name}/{MANIFEST_NAME}", 1)[0].commit


def _insert(db, manifest: Manifest, commit: str, status: str, clock, decided_by: str | None = None) -> int:
    row = {"name": manifest.name, "version": manifest.version, "hash": manifest.hash, "author": manifest.author,
           "entry": manifest.entry, "serves": json.dumps(list(manifest.serves)), "commit_sha": commit,
           "status": status, "created": stamp(clock())}
    if decided_by:
        row.update(decided_by=decided_by, decided_at=stamp(clock()))
    return db["modules"].insert(row).last_pk


# -- publishing ---------------------------------------------------------------------------

def publish(node: Node, source: Path, *, version: str, entry: str, serves: Iterable[str] = (),
            name: str | None = None, clock: Callable[[], datetime] = utc_now) -> ModuleVersion:
    """Sign the files of `source` as module `name` (default: the directory's name) and place
    them in modules.shared/, where Syncthing takes them to every peer. Publishing is this
    node's approval: the new version runs here at once; every other node asks its person."""
    source = Path(source)
    if not source.is_dir():
        raise ModuleQueueError(f"{source} is not a directory; pass the directory that holds the module's files.")
    name = name or source.name
    if not NAME_RE.fullmatch(name):
        raise ModuleQueueError(f"Module name {echo(name)} is not allowed; use lowercase letters, digits, '-' "
                               "or '_' (pass --name).")
    files = collect_files(source)
    manifest = Manifest.create(name=name, version=version, author=node.name, entry=entry, serves=serves,
                               files=files, key=node.signing_key(), created=clock())
    with modules_lock(node.layout.home), _repo(node) as repo:
        db = open_state(node.layout.state_db)
        try:
            if db.execute("SELECT 1 FROM modules WHERE name = ? AND version = ? AND status != ?",
                          [name, version, REFUSED]).fetchone():
                raise ModuleQueueError(f"Module {name} already has a version {version}; publish with a new "
                                       "--version.")
            _place(node.layout.modules_shared / name, source, manifest)
            commit = _commit(repo, manifest, clock)
            _close_refusal(db, name)
            item = _insert(db, manifest, commit, AWAITING, clock)
            chosen = _approve_row(node, db, repo, _row(db, item), clock, by=f"{node.name} (published here)")
        finally:
            db.close()
    try:
        node.client.scan(MODULES_FOLDER_ID, name)
    except SyncthingError as exc:
        logger.warning("module placed; Syncthing will pick it up later (%s)", str(exc).split(";")[0])
    return chosen


def _place(target: Path, source: Path, manifest: Manifest) -> None:
    """Copy the listed files, drop any others, and write module.json last, so a peer that
    sees a complete manifest sees a complete module (or waits on `missing`)."""
    target.mkdir(parents=True, exist_ok=True)
    for rel in manifest.files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = (source / rel).read_bytes()
        write_atomic(dest, data, mode=0o644)
        if file_digest(dest) != manifest.files[rel]:
            raise ModuleQueueError(f"{source / rel} changed while it was being published; publish again.")
    for path in sorted(target.rglob("*"), reverse=True):
        rel = path.relative_to(target).as_posix()
        if path.is_symlink() or (path.is_file() and rel not in manifest.files and rel != MANIFEST_NAME):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    write_atomic(target / MANIFEST_NAME, manifest.to_bytes())


# -- the queue ------------------------------------------------------------------------------

def _row(db, item: int) -> dict[str, Any]:
    return dict(db["modules"].get(item))


def _versions(db, name: str | None = None) -> list[ModuleVersion]:
    where, args = ("WHERE name = ?", [name]) if name else ("", [])
    return [ModuleVersion.from_row(r) for r in db.query(f"SELECT * FROM modules {where} ORDER BY name, id", args)]


def list_modules(node: Node) -> list[ModuleSummary]:
    db = open_state(node.layout.state_db)
    try:
        versions = _versions(db)
    finally:
        db.close()
    by_name: dict[str, list[ModuleVersion]] = {}
    for v in versions:
        by_name.setdefault(v.name, []).append(v)
    return [_summary(name, vs) for name, vs in sorted(by_name.items())]


def _summary(name: str, versions: list[ModuleVersion]) -> ModuleSummary:
    return ModuleSummary(name, next((v for v in versions if v.status == APPROVED), None),
                         tuple(v for v in versions if v.status == AWAITING),
                         next((v for v in versions if v.status == REFUSED), None))


def history(node: Node, name: str) -> list[tuple[ModuleVersion, Revision | None]]:
    """`module log`: every version seen here, oldest first, with the commit that holds it."""
    db = open_state(node.layout.state_db)
    try:
        versions = [v for v in _versions(db, name) if v.status != REFUSED]
    finally:
        db.close()
    if not versions:
        raise ModuleQueueError(f"There is no module {echo(name)} on {node.name}; list them with `twinsync modules`.")
    with _repo(node) as repo:
        revisions = {r.commit: r for r in repo.log(f"{name}/{MANIFEST_NAME}")}
    return [(v, revisions.get(v.commit or "")) for v in versions]


def show(node: Node, name: str, version: str | None = None) -> ModuleDetail:
    """The newest awaiting version (or `version`, or the running one), its files from Git,
    and its diff against the approved version."""
    db = open_state(node.layout.state_db)
    try:
        versions = _versions(db, name)
    finally:
        db.close()
    if not versions:
        raise ModuleQueueError(f"There is no module {echo(name)} on {node.name}; list them with `twinsync modules`.")
    summary = _summary(name, versions)
    subject = (_pick(versions, name, version) if version
               else (summary.awaiting[-1] if summary.awaiting else summary.running))
    files, changes, diff = {}, {"added": [], "removed": [], "changed": []}, ""
    if subject is not None and subject.commit:
        with _repo(node) as repo:
            manifest = _manifest_at(repo, subject)
            files = manifest.files
            base = summary.running if summary.running and summary.running.hash != subject.hash else None
            changes = file_changes(_manifest_at(repo, base) if base else None, manifest)
            if base is not None:
                diff = repo.diff(base.commit, subject.commit, name)
    return ModuleDetail(summary, subject, files, changes, diff)


def _pick(versions: list[ModuleVersion], name: str, version: str | None) -> ModuleVersion:
    valid = [v for v in versions if v.status != REFUSED]
    if version is None:
        waiting = [v for v in valid if v.status == AWAITING]
        if not waiting:
            raise ModuleQueueError(f"Module {name} has no version awaiting approval; pass --version to choose "
                                   "one from `twinsync module log`.")
        return waiting[-1]
    chosen = [v for v in valid if v.version == version]
    if not chosen:
        raise ModuleQueueError(f"Module {name} has no version {echo(version)} here; see `twinsync module log {name}`.")
    return chosen[-1]


def approve(node: Node, name: str, version: str | None = None, *,
            clock: Callable[[], datetime] = utc_now) -> ModuleVersion:
    """Approve the newest awaiting version, or `version` (an older one rolls back to it): it
    is checked out of Git and runs from now on; the version that ran before is superseded."""
    with modules_lock(node.layout.home), _repo(node) as repo:
        db = open_state(node.layout.state_db)
        try:
            chosen = _pick(_versions(db, name), name, version)
            return _approve_row(node, db, repo, _row(db, chosen.id), clock, by=node.name)
        finally:
            db.close()


def _approve_row(node: Node, db, repo: FrameRepo, row: dict[str, Any], clock, *, by: str) -> ModuleVersion:
    version = ModuleVersion.from_row(row)
    checkout(node, repo, version)  # refuses before anything is recorded
    with db.conn:
        db.execute("UPDATE modules SET status = ? WHERE name = ? AND status = ? AND id != ?",
                   [SUPERSEDED, version.name, APPROVED, version.id])
        db["modules"].update(version.id, {"status": APPROVED, "decided_by": by, "decided_at": stamp(clock())})
    logger.info("%s approved on %s by %s", version.label, node.name, by)
    return ModuleVersion.from_row(_row(db, version.id))


def reject(node: Node, name: str, version: str | None = None, *,
           clock: Callable[[], datetime] = utc_now) -> ModuleVersion:
    """The awaiting version (or `version`) is never run here; what runs keeps running."""
    with modules_lock(node.layout.home):
        db = open_state(node.layout.state_db)
        try:
            chosen = _pick(_versions(db, name), name, version)
            if chosen.status == APPROVED:
                raise ModuleQueueError(f"{chosen.label} is the one running here; approve another version "
                                       "instead to replace it.")
            db["modules"].update(chosen.id, {"status": REJECTED, "decided_by": node.name,
                                             "decided_at": stamp(clock())})
            logger.info("%s rejected on %s", chosen.label, node.name)
            return ModuleVersion.from_row(_row(db, chosen.id))
        finally:
            db.close()


# -- running ------------------------------------------------------------------------------

def _manifest_at(repo: FrameRepo, version: ModuleVersion) -> Manifest:
    manifest = Manifest.from_dict(json.loads(repo.show(version.commit, f"{version.name}/{MANIFEST_NAME}")))
    if manifest.hash != version.hash:
        raise ModuleQueueError(f"modules.git holds another manifest for {version.label} than the one queued; "
                               "run `git fsck` on modules.git.")
    return manifest


def run_dir(layout: NodeLayout, version: ModuleVersion) -> Path:
    return layout.modules_run / version.name / version.hash.removeprefix("sha256:")[:16]


def checkout(node: Node, repo: FrameRepo, version: ModuleVersion) -> Path:
    """The version's files from Git into modules.run/<name>/<hash>/, each checked against its
    signed hash again; built under a temp name and renamed, so a half checkout never runs."""
    target = run_dir(node.layout, version)
    if target.is_dir():
        return target
    manifest = _manifest_at(repo, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=target.parent))
    try:
        for rel, digest in manifest.files.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(repo.show(version.commit, f"{version.name}/{rel}"))
            if file_digest(dest) != digest:
                raise ModuleQueueError(f"modules.git holds another {rel} for {version.label} than its author "
                                       "signed; run `git fsck` on modules.git.")
            os.chmod(dest, 0o755 if rel == manifest.entry else 0o444)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def program_of(node: Node, name: str) -> Program:
    """How to run the approved version of module `name` (from its private checkout)."""
    db = open_state(node.layout.state_db)
    try:
        running = _summary(name, _versions(db, name)).running
    finally:
        db.close()
    if running is None:
        raise ModuleQueueError(f"Module {echo(name)} is not approved on {node.name}; see `twinsync module show "
                            f"{name}` and approve it with `twinsync module approve {name}`.")
    with _repo(node) as repo:
        code = checkout(node, repo, running)
    if ":" in (running.entry or ""):
        argv = (sys.executable, "-I", "-c", _PYTHON_RUNNER, str(code), running.entry)
    elif running.entry.endswith(".py"):
        argv = (sys.executable, "-I", str(code / running.entry))
    else:
        argv = (str(code / running.entry),)
    return Program(argv, running.label)


def running_modules(node: Node) -> list[str]:
    """"name version" of every module approved here, for the fingerprint's profile."""
    return [f"{s.name} {s.running.version}" for s in list_modules(node) if s.running is not None]
