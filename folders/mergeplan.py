"""The merge plan: what to merge next from each node's recovery folder, decided before
anything is touched (the Litestream way: a replica walks TXID+1 in order, and bridges or
stops at a gap).

`survey` reads what is on disk (every manifest, readable or not, with the reason) and
what trace.db holds (`merged`, a set of (node, seq), and this node's `publish_log`);
`plan` is a pure function of that survey and returns, per node, an ordered list of
actions: `Merge` a segment, `Bridge` a gap with a snapshot, `Wait` for a seq (with the
reason), `Refuse` a file (with the reason). The rule it enforces: per node, segment seq N
merges only when N-1 is held, or right after a snapshot of that node that covers the gap
was bridged. Syncthing delivers files in no particular order, so reordering is normal:
a later segment waits, and a hole left by an older twinsync (a seq missing below merged
ones) is filled as soon as its segment or a covering snapshot is here.

Nothing is silent: every file in a node folder that is not merged (or covered by what is
merged) is in a `Wait` or a `Refuse`. Verification happens while executing the plan
(orchestrator/recovery); a file that fails it is passed back in `failed` and the plan is
made again without it.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from folders.layout import NODE_NAME_RE
from folders.manifest import SegmentError, regular_file_problem
from folders.segments import SEGMENTS_DIR, read_segment_manifest
from folders.snapshots import SNAPSHOT_STEM, SNAPSHOTS_DIR, node_folders, read_snapshot_manifest
from folders.stepsfile import is_bridged
from folders.trace import connect

#: Verification codes that mean "not here yet" (a manifest can arrive before its .db).
WAITING_CODES = frozenset({"missing_file"})
_SEGMENT_NAME = re.compile(r"^seg-\d{8,}-\d{8,}\.(json|db)$")
_SNAPSHOT_NAME = re.compile(rf"^{SNAPSHOT_STEM}\.(json|db)$")
_MISSING = "is missing"


@dataclass(frozen=True)
class Piece:
    """A segment or snapshot whose manifest reads; nothing verified yet. `db_problem` is
    None when its .db is a regular file, "is missing" while it has not arrived."""

    kind: str  # "segment" or "snapshot"
    node: str
    seq: int
    sha256: str
    created: str
    manifest_path: Path
    db_path: Path
    db_problem: str | None


@dataclass(frozen=True)
class Merge:
    segment: Piece


@dataclass(frozen=True)
class Bridge:
    """Merge `snapshot` to cover seqs `gap`..snapshot.seq of its node."""

    snapshot: Piece
    gap: int


@dataclass(frozen=True)
class Wait:
    """`files` wait; `seq` is the node's next seq when they wait on a gap, else None."""

    node: str
    seq: int | None
    reason: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Refuse:
    node: str
    path: Path
    code: str
    reason: str


Action = Merge | Bridge | Wait | Refuse


@dataclass(frozen=True)
class Survey:
    """What `plan` decides from: the pieces on disk, the files refused on sight, and what
    trace.db holds per node (seq → sha256 of what was merged or published)."""

    own: str
    pieces: tuple[Piece, ...] = ()
    refused: tuple[Refuse, ...] = ()
    orphans: tuple[tuple[str, Path], ...] = ()  # (node, .db) whose manifest has not arrived
    held: Mapping[str, Mapping[int, str]] = field(default_factory=dict)


# --- what is on disk ------------------------------------------------------------------------

def survey(recovery_root: Path, trace_db_path: Path, own: str) -> Survey:
    """Read every node folder's manifests (none of the .db files) and trace.db's record."""
    pieces: list[Piece] = []
    refused: list[Refuse] = []
    orphans: list[tuple[str, Path]] = []
    for folder in node_folders(recovery_root):
        _survey_folder(folder, pieces, refused, orphans)
    try:
        entries = sorted(Path(recovery_root).iterdir())
    except OSError:
        entries = []
    for entry in entries:  # a link or a file where a node folder belongs is said, not skipped
        problem = regular_file_problem(entry)
        if NODE_NAME_RE.match(entry.name) and problem != "is a directory, not a file":
            refused.append(Refuse(entry.name, entry, "not_a_folder", f"{entry} {problem}; a "
                                  f"node's recovery folder must be a folder, remove it."))
    return Survey(own, tuple(pieces), tuple(refused), tuple(orphans), held_in(trace_db_path, own))


def held_in(trace_db_path: Path, own: str) -> dict[str, dict[int, str]]:
    """Per node, the seqs trace.db holds: `merged` rows, and this node's published ones."""
    conn = connect(trace_db_path)
    try:
        held: dict[str, dict[int, str]] = defaultdict(dict)
        for node, seq, sha in conn.execute("SELECT node, seq, sha256 FROM merged"):
            held[node][seq] = sha
        for seq, sha in conn.execute("SELECT seq, sha256 FROM publish_log"):
            held[own].setdefault(seq, sha)
    finally:
        conn.close()
    return dict(held)


def _survey_folder(folder: Path, pieces: list[Piece], refused: list[Refuse],
                   orphans: list[tuple[str, Path]]) -> None:
    node = folder.name
    for sub, kind, names, read in ((SEGMENTS_DIR, "segment", _SEGMENT_NAME, read_segment_manifest),
                                   (SNAPSHOTS_DIR, "snapshot", _SNAPSHOT_NAME, read_snapshot_manifest)):
        directory = folder / sub
        problem = regular_file_problem(directory)
        if problem != "is a directory, not a file":
            if problem != _MISSING:
                refused.append(Refuse(node, directory, "not_a_folder", f"{directory} {problem}; "
                                      f"it should be the folder of {node}'s {kind}s, remove it."))
            continue
        try:
            entries = sorted(os.listdir(directory))
        except OSError as exc:
            refused.append(Refuse(node, directory, "unreadable", f"{directory} cannot be listed "
                                  f"({exc.strerror}); check its permissions."))
            continue
        manifests = {name[:-5] for name in entries if name.endswith(".json")}
        for name in entries:
            path = directory / name
            if name.startswith((".", "~syncthing~")):
                continue  # Syncthing's and twinsync's temporary files, still being written
            if not names.match(name):
                refused.append(Refuse(node, path, "unknown_file", f"{path} is not a {kind} file "
                                      f"twinsync writes; remove it from {node}'s folder."))
            elif name.endswith(".db"):
                if name[:-3] not in manifests:
                    orphans.append((node, path))
            else:
                piece = _read_piece(path, kind, read, node, refused)
                if piece is not None:
                    pieces.append(piece)


def _read_piece(path: Path, kind: str, read, node: str, refused: list[Refuse]) -> Piece | None:
    try:
        manifest = read(path)
    except SegmentError as exc:
        refused.append(Refuse(node, path, exc.code, str(exc)))
        return None
    if manifest["node"] != node:
        refused.append(Refuse(node, path, "wrong_folder", f"{kind.capitalize()} manifest {path} "
                              f"names node {manifest['node']!r} but sits in {node}'s folder; "
                              "only a node writes its own folder, remove it."))
        return None
    db_path = path.with_name(manifest["file"])
    return Piece(kind, node, manifest["seq"], manifest["sha256"], manifest["created"], path,
                 db_path, regular_file_problem(db_path))


# --- the plan -------------------------------------------------------------------------------

def plan(survey: Survey, failed: Mapping[Path, tuple[str, str]] | None = None
         ) -> dict[str, list[Action]]:
    """Per node (sorted by name), the actions to take in order; pure.

    `failed` maps a manifest path to the (code, reason) its verification gave in this
    run: a waiting code makes the piece wait, any other refuses it, and either way the
    plan goes around it (another snapshot may bridge the gap)."""
    failed = failed or {}
    by_node: dict[str, list[Piece]] = defaultdict(list)
    for piece in survey.pieces:
        by_node[piece.node].append(piece)
    actions: dict[str, list[Action]] = defaultdict(list)
    for refusal in survey.refused:
        actions[refusal.node].append(refusal)
    for node, db_path in survey.orphans:
        actions[node].append(Wait(node, None, f"{db_path} waits for its manifest, which has "
                                  "not arrived yet", (db_path,)))
    for node, pieces in sorted(by_node.items()):
        actions[node].extend(_plan_node(node, pieces, survey.held.get(node, {}), failed))
    return {node: actions[node] for node in sorted(actions) if actions[node]}


def _plan_node(node: str, pieces: list[Piece], held: Mapping[int, str],
               failed: Mapping[Path, tuple[str, str]]) -> list[Action]:
    out: list[Action] = []
    segments: dict[int, list[Piece]] = defaultdict(list)
    snapshots: list[Piece] = []
    not_ready: dict[Path, str] = {}  # manifest → why it cannot be used yet (waiting)
    for piece in pieces:
        if piece.manifest_path in failed:
            code, reason = failed[piece.manifest_path]
            if code not in WAITING_CODES:
                out.append(Refuse(node, piece.manifest_path, code, reason))
                continue
            not_ready[piece.manifest_path] = reason
        elif piece.db_problem == _MISSING:
            not_ready[piece.manifest_path] = (f"{piece.db_path.name} has not arrived yet "
                                              "(its manifest has)")
        elif piece.db_problem is not None:
            out.append(Refuse(node, piece.db_path, "not_a_file", f"{piece.kind.capitalize()} "
                              f"{piece.db_path} {piece.db_problem}; remove it and ask {node} "
                              "to publish again."))
            continue
        if piece.kind == "snapshot":
            snapshots.append(piece)
            continue
        recorded = held.get(piece.seq)
        if recorded is not None and recorded != piece.sha256 and not is_bridged(recorded):
            out.append(Refuse(node, piece.manifest_path, "seq_reused", f"Segment "
                              f"{piece.manifest_path} reuses seq {piece.seq} of {node} with "
                              "other content than the one already merged; check that node "
                              "before merging, then remove the file."))
            continue
        segments[piece.seq].append(piece)
    for seq, same in list(segments.items()):
        if len({p.sha256 for p in same}) > 1 and seq not in held:
            out.extend(Refuse(node, p.manifest_path, "seq_conflict", f"Segment {p.manifest_path} "
                              f"is one of {len(same)} different segments of {node} with seq "
                              f"{seq}; check that node, then remove the wrong ones.") for p in same)
            del segments[seq]
    top = max([*segments, *(s.seq for s in snapshots), 0])
    seq = 1  # the walk only goes forward: seq N is reached only once 1..N-1 are held or planned
    while seq <= top:
        if seq in held:
            seq += 1
            continue
        ready = [p for p in segments.get(seq, ()) if p.manifest_path not in not_ready]
        if ready:
            out.append(Merge(ready[0]))
            seq += 1
            continue
        bridges = [s for s in snapshots if s.seq >= seq and s.manifest_path not in not_ready]
        if bridges:
            best = max(bridges, key=lambda s: (s.seq, s.created, s.manifest_path.name))
            out.append(Bridge(best, seq))
            seq = best.seq + 1
            continue
        # files behind the gap that are not ready yet say their own reason too
        gap = _gap(node, seq, segments, snapshots, not_ready)
        at_gap = {p.manifest_path for p in segments.get(seq, ())}
        own = [f for f in gap.files if f in not_ready and f not in at_gap]
        out.append(Wait(node, seq, gap.reason, tuple(f for f in gap.files if f not in own)))
        out.extend(Wait(node, None, not_ready[f], (f,)) for f in own)
        break
    return out


def _gap(node: str, seq: int, segments: Mapping[int, list[Piece]], snapshots: list[Piece],
         not_ready: Mapping[Path, str]) -> Wait:
    """Why the node stops at `seq`, and every file that waits behind it."""
    here = segments.get(seq, ())
    arriving = [s for s in snapshots if s.seq >= seq]
    if here:
        why = f"segment #{seq} of {node} is not ready: {not_ready[here[0].manifest_path]}"
    elif arriving:
        why = (f"segment #{seq} of {node} has not arrived, and the snapshot that covers it is "
               f"not ready: {not_ready[arriving[0].manifest_path]}")
    else:
        why = (f"segment #{seq} of {node} has not arrived, and no snapshot of {node} here "
               "covers it")
    files = sorted({p.manifest_path for s, ps in segments.items() if s >= seq for p in ps}
                   | {s.manifest_path for s in arriving})
    return Wait(node, seq, why, tuple(files))
