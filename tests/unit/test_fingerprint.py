"""Node fingerprints: sign, write, read back; each problem on disk; staleness; compare."""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from folders.fingerprint import (
    FINGERPRINT_NAME,
    Fingerprint,
    FingerprintError,
    FingerprintView,
    compare,
    make_fingerprint,
    read_fingerprint,
    trace_facts,
    update_facts,
    write_fingerprint,
)
from folders import keys
from folders.files import syncthing_temp_for
from folders.frame import canonical_json
from folders.meaning import profile_of, rank_peers
from folders.metrics import compute_metrics, frames_root
from folders.segments import merge_segment, publish, verify_segment
from folders.trace import TraceDB, connect, ensure_schema
from tests.unit.tracekit import TraceChanges, new_trace, node_keys, trace_changes

NODES = ("a", "b", "c", "d")
KEYS, TRUSTED = node_keys(*NODES)
CREATED = datetime(2026, 11, 25, 8, 0, 0, tzinfo=timezone.utc)
ROOT_X = frames_root([("notes/a.frame.json", "sha256:" + "1" * 64)])
ROOT_Y = frames_root([("notes/a.frame.json", "sha256:" + "2" * 64)])
METRICS = {"convergence": 0.9, "conflict_rate": 0.0, "access_p95_ms": 1.25,
           "routes_per_goal": 3.0}


def fingerprint(node: str = "a", root: str = ROOT_X, key: Ed25519PrivateKey | None = None,
                created: datetime = CREATED, **changes: object) -> Fingerprint:
    values: dict[str, object] = dict(
        node=node, device_id="MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD",
        version="0.1.0", frames_root=root, frames_count=1, trace_steps=12, trace_sessions=4,
        trace_head="sha256:" + "a" * 64, last_publish="2026-11-25T07:59:00.000001Z",
        last_merge=None, pending_conflicts=0, pending_forks=1, metrics=METRICS)
    values.update(changes)
    return make_fingerprint(**values, key=key or KEYS[node],  # type: ignore[arg-type]
                            clock=lambda: created)


def place(recovery: Path, folder: str, fp: Fingerprint) -> Path:
    path = recovery / folder / FINGERPRINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fp.to_bytes())
    return path


def read(path: Path, trusted=TRUSTED, now: datetime = CREATED) -> FingerprintView:
    return read_fingerprint(path, trusted, now=now, stale_after=timedelta(hours=1))


def test_sign_write_read_round_trip(tmp_path: Path) -> None:
    fp = fingerprint()
    path = tmp_path / "recovery" / "a" / FINGERPRINT_NAME
    write_fingerprint(path, fp)
    view = read(path, now=CREATED + timedelta(minutes=5))
    assert view.ok and view.problem is None and view.node == "a"
    assert view.fingerprint == fp
    assert view.fingerprint.verify(TRUSTED["a"]) and not fp.verify(TRUSTED["b"])
    assert (view.stale, view.age) == (False, timedelta(minutes=5))
    on_disk = json.loads(path.read_text())
    assert on_disk["created"] == "2026-11-25T08:00:00Z" and on_disk["twinsync"] == 2
    assert on_disk["metrics"] == METRICS and set(on_disk) == set(fp.to_dict())
    assert not list(path.parent.glob(".twinsync-tmp-*"))


def test_made_from_a_real_trace_and_metrics(tmp_path: Path) -> None:
    traces = {n: tmp_path / f"{n}.db" for n in ("a", "b")}
    for node, trace in traces.items():
        ensure_schema(trace)
        with TraceDB(trace, node) as tdb:
            session = tdb.start_session("g")
            tdb.finish(session, "42")
    segment = publish(traces["b"], tmp_path / "b", "b", KEYS["b"])
    assert segment is not None
    merge_segment(traces["a"], verify_segment(segment.manifest_path, TRUSTED))
    with closing(connect(traces["a"])) as conn:
        facts = trace_facts(conn, "a")
        assert (facts.trace_steps, facts.trace_sessions, facts.trace_head) == (2, 1, None)
        assert facts.last_publish is None and facts.last_merge is not None
    own = publish(traces["a"], tmp_path / "a", "a", KEYS["a"])
    assert own is not None
    with closing(connect(traces["a"])) as conn:
        facts = trace_facts(conn, "a")
        head = conn.execute("SELECT hash FROM steps WHERE author = 'a' AND kind = 'conclusion'"
                            ).fetchone()[0]
        metrics = compute_metrics(conn, frames_total=0, frames_in_conflict=0, frames_invalid=0,
                                  frames_disagreeing=0)
    assert (facts.trace_steps, facts.trace_sessions, facts.trace_head) == (4, 2, head)
    assert facts.last_publish == own.created
    fp = make_fingerprint(node="a", device_id="DEVICE-A", version="0.1.0", frames_root=ROOT_X,
                          frames_count=0, pending_conflicts=0, pending_forks=0,
                          metrics=metrics, key=KEYS["a"], **facts._asdict())
    assert fp.metrics["convergence"] == 1.0 and fp.metrics["conflict_rate"] is None
    path = tmp_path / "recovery" / "a" / FINGERPRINT_NAME
    write_fingerprint(path, fp)
    assert read_fingerprint(path, TRUSTED).ok


def test_missing(tmp_path: Path) -> None:
    view = read(tmp_path / "a" / FINGERPRINT_NAME)
    assert (view.ok, view.problem.code, view.node, view.stale) == (False, "missing", "a", True)
    assert str(tmp_path / "a" / FINGERPRINT_NAME) in view.problem.message


def test_a_fingerprint_syncthing_is_replacing_is_read_once_it_is_in_place(tmp_path: Path) -> None:
    """Syncthing deletes the old file and only then renames the new one into place, so a
    reader in between found no fingerprint (the peer link's routing then had no port)."""
    path = place(tmp_path, "a", fingerprint())
    newer = fingerprint(created=CREATED + timedelta(minutes=1))
    pulled = syncthing_temp_for(path)
    pulled.write_bytes(newer.to_bytes())
    path.unlink()  # Syncthing's performFinish: the old file is gone, the new one not yet renamed
    rename = threading.Timer(0.2, os.replace, (pulled, path))
    rename.start()
    try:
        view = read(path, now=CREATED + timedelta(minutes=1))
    finally:
        rename.join()
    assert view.ok and view.fingerprint == newer


def test_a_missing_fingerprint_is_missing_at_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    started = time.monotonic()
    view = read(tmp_path / "a" / FINGERPRINT_NAME)
    assert view.problem.code == "missing" and time.monotonic() - started < 0.1


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[" * 60_000, b"[" * 70_000])
def test_bad_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "a" / FINGERPRINT_NAME
    path.parent.mkdir()
    path.write_bytes(content)
    assert read(path).problem.code == "bad_json"


@pytest.mark.parametrize("change", [
    lambda d: d.pop("sig"),
    lambda d: d.update(extra=1),
    lambda d: d.update(twinsync=3),
    lambda d: d.update(twinsync=1),
    lambda d: d.update(profile={"representation": "x"}),
    lambda d: d.update(profile={"representation": "x", "version": 1, "texts": 1, "vector": "!"}),
    lambda d: d.update(node="no/slash"),
    lambda d: d.update(frames_count=-1),
    lambda d: d.update(frames_count=True),
    lambda d: d.update(trace_steps="12"),
    lambda d: d.update(frames_root="sha256:xyz"),
    lambda d: d.update(trace_head="head"),
    lambda d: d.update(created="yesterday"),
    lambda d: d.update(created="2026-02-30T08:00:00Z"),
    lambda d: d.update(last_merge="2026-11-25 08:00"),
    lambda d: d.update(device_id=""),
    lambda d: d["metrics"].pop("convergence"),
    lambda d: d["metrics"].update(convergence="high"),
    lambda d: d["metrics"].update(convergence=-0.5),
])
def test_bad_schema(tmp_path: Path, change) -> None:
    data = fingerprint().to_dict()
    change(data)
    path = tmp_path / "a" / FINGERPRINT_NAME
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    view = read(path)
    assert view.problem.code == "bad_schema", view.problem
    assert view.problem.message.endswith("let its node publish again with a matching twinsync.")
    path.write_text("[1, 2]")
    assert read(path).problem.code == "bad_schema"


def test_untrusted_node(tmp_path: Path) -> None:
    stranger = Ed25519PrivateKey.generate()
    path = place(tmp_path, "zed", fingerprint("zed", key=stranger))
    view = read(path)
    assert view.problem.code == "untrusted_node" and "'zed'" in view.problem.message
    assert read(path, trusted={"zed": stranger.public_key()}).ok


def test_bad_signature(tmp_path: Path) -> None:
    altered = fingerprint().to_dict()
    altered["pending_conflicts"] = 0 if altered["pending_conflicts"] else 7
    path = tmp_path / "a" / FINGERPRINT_NAME
    path.parent.mkdir()
    path.write_text(json.dumps(altered))
    assert read(path).problem.code == "bad_signature"
    # Signed by a trusted key, but not the key of the node it names: impersonation.
    place(tmp_path, "a", fingerprint("a", key=KEYS["b"]))
    assert read(path).problem.code == "bad_signature"
    altered = fingerprint().to_dict() | {"sig": "ed25519:!!!"}
    path.write_text(json.dumps(altered))
    assert read(path).problem.code == "bad_signature"


def test_wrong_node(tmp_path: Path) -> None:
    """b's folder holding a's genuine fingerprint: b may not report as a."""
    genuine = place(tmp_path, "a", fingerprint("a"))
    copy = tmp_path / "b" / FINGERPRINT_NAME
    copy.parent.mkdir()
    shutil.copy(genuine, copy)
    view = read(copy)
    assert (view.problem.code, view.node, view.fingerprint) == ("wrong_node", "b", None)
    with pytest.raises(FingerprintError, match="not named 'a'"):
        write_fingerprint(copy, fingerprint("a"))


def test_stale_after_the_given_time(tmp_path: Path) -> None:
    path = place(tmp_path, "a", fingerprint())
    assert not read(path, now=CREATED + timedelta(minutes=59)).stale
    assert not read(path, now=CREATED + timedelta(hours=1)).stale
    old = read(path, now=CREATED + timedelta(hours=1, seconds=1))
    assert old.ok and old.stale and old.age == timedelta(hours=1, seconds=1)
    fresh = read_fingerprint(path, TRUSTED, now=CREATED + timedelta(days=2),
                             stale_after=timedelta(days=3))
    assert not fresh.stale
    ahead = read(path, now=CREATED - timedelta(minutes=1))  # the writer's clock runs fast
    assert not ahead.stale and ahead.age == timedelta(minutes=-1)


def test_make_fingerprint_refuses_what_a_reader_would_refuse() -> None:
    with pytest.raises(FingerprintError, match="frames_count"):
        fingerprint(frames_count=-1)
    with pytest.raises(FingerprintError, match="frames_root"):
        fingerprint(root="abc")
    with pytest.raises(FingerprintError, match="metric convergence"):
        fingerprint(metrics={**METRICS, "convergence": math.nan})
    with pytest.raises(FingerprintError, match="metrics is not an object"):
        fingerprint(metrics={"convergence": 1.0})
    with pytest.raises(FingerprintError, match="time zone"):
        fingerprint(created=datetime(2026, 11, 25, 8))
    assert fingerprint(metrics=dict.fromkeys(METRICS)).metrics == dict.fromkeys(METRICS)


def view_of(tmp_path: Path, node: str, root: str) -> FingerprintView:
    return read(place(tmp_path, node, fingerprint(node, root=root)))


def test_compare_names_who_disagrees_with_the_majority(tmp_path: Path) -> None:
    views = [view_of(tmp_path, "a", ROOT_X), view_of(tmp_path, "b", ROOT_Y),
             view_of(tmp_path, "c", ROOT_X), read(tmp_path / "d" / FINGERPRINT_NAME)]
    assert compare(views) == {
        "majority_root": ROOT_X, "agreeing": ["a", "c"], "disagreeing": ["b"],
        "unknown": ["d"], "by_node": {"a": True, "b": False, "c": True, "d": None}}
    tie = compare(reversed(views[:2]))
    assert tie["majority_root"] == min(ROOT_X, ROOT_Y)
    assert compare([]) == {"majority_root": None, "agreeing": [], "disagreeing": [],
                           "unknown": [], "by_node": {}}
    assert compare(views[3:])["unknown"] == ["d"]


signed_values = st.fixed_dictionaries({
    "frames_count": st.integers(0, 2**53),
    "pending_forks": st.integers(0, 10**6),
    "version": st.text(min_size=1, max_size=30),
    "metrics": st.fixed_dictionaries({
        name: st.none() | st.floats(0, 1e9, allow_nan=False) for name in METRICS}),
})


@settings(max_examples=100, deadline=None)
@given(values=signed_values)
def test_signature_survives_the_file_and_covers_every_field(values) -> None:
    fp = fingerprint(**values)
    back = Fingerprint(**{k: v for k, v in json.loads(fp.to_bytes()).items()})
    assert back == fp and back.verify(TRUSTED["a"])
    assert canonical_json(back.unsigned_dict()) == canonical_json(fp.unsigned_dict())
    for name, value in fp.unsigned_dict().items():
        if name in ("twinsync", "metrics"):
            continue
        other = "2026-11-25T09:00:00Z" if name in ("created", "last_publish") else (
            value + 1 if isinstance(value, int) else ROOT_Y if name in (
                "frames_root", "trace_head") else f"{value}x")
        assert not Fingerprint(**{**fp.to_dict(), name: other}).verify(TRUSTED["a"]), name


PROFILE = profile_of(["Как поливать томаты в теплице", "tomato blight", "garden/tomatoes"])


def test_the_profile_is_signed_and_read_back(tmp_path: Path) -> None:
    fp = fingerprint(profile=PROFILE)
    path = place(tmp_path, "a", fp)
    view = read(path)
    assert view.ok and view.fingerprint.meaning() == PROFILE
    assert json.loads(path.read_text())["profile"] == PROFILE.to_dict()
    # Advertising other knowledge in a's name: any change to the profile breaks the signature.
    for forged in (profile_of(["heat pump"]).to_dict(), None,
                   {**PROFILE.to_dict(), "texts": PROFILE.texts + 1}):
        path.write_text(json.dumps(fp.to_dict() | {"profile": forged}))
        assert read(path).problem.code == "bad_signature", forged
    assert fingerprint().meaning() is None  # a node that knows nothing yet


def test_a_format_1_fingerprint_still_reads_and_ranks_last(tmp_path: Path) -> None:
    """Written by a twinsync from before profiles: no profile field, signed without one."""
    unsigned = {k: v for k, v in fingerprint("b").unsigned_dict().items() if k != "profile"}
    unsigned["twinsync"] = 1
    path = tmp_path / "b" / FINGERPRINT_NAME
    path.parent.mkdir()
    path.write_text(json.dumps(unsigned | {"sig": keys.sign(KEYS["b"], canonical_json(unsigned))}))
    view = read(path)
    assert view.ok, view.problem
    assert view.fingerprint.twinsync == 1 and view.fingerprint.meaning() is None
    profiles = {"b": view.fingerprint.meaning(),
                "a": read(place(tmp_path, "a", fingerprint(profile=PROFILE))).fingerprint.meaning()}
    assert [peer for peer, _ in rank_peers("когда поливать томаты", profiles)] == ["a", "b"]


def test_the_modules_a_node_runs_are_signed_and_optional(tmp_path: Path) -> None:
    plain, with_modules = fingerprint(), fingerprint(modules=["notes 1.1", "agenda 2"])
    assert "modules" not in plain.to_dict(), "a node that runs no module writes what older readers accept"
    assert with_modules.modules == ("agenda 2", "notes 1.1")
    view = read(place(tmp_path, "a", with_modules))
    assert view.ok and view.fingerprint == with_modules
    forged = json.loads(with_modules.to_bytes())
    forged["modules"] = ["evil 1"]
    (tmp_path / "a" / FINGERPRINT_NAME).write_text(json.dumps(forged))
    assert read(tmp_path / "a" / FINGERPRINT_NAME).problem.code == "bad_signature"
    forged["modules"] = "notes"
    (tmp_path / "a" / FINGERPRINT_NAME).write_text(json.dumps(forged))
    assert read(tmp_path / "a" / FINGERPRINT_NAME).problem.code == "bad_schema"


@pytest.fixture(scope="module")
def scratch_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_trace(tmp_path_factory.mktemp("facts") / "t.db")


@settings(max_examples=150, deadline=None)
@given(plan=trace_changes)
def test_facts_brought_up_to_date_equal_facts_counted_whole(scratch_trace: Path, plan) -> None:
    """After any run of merges, sessions moving between published and not (the head's own
    among them) and steps removed, the kept facts are what counting every step gives."""
    with closing(connect(scratch_trace)) as conn:
        changes, book = TraceChanges(conn), None
        for batch in plan:
            changes.apply(batch)
            book = update_facts(conn, "a", book)
            hidden = "session NOT IN (SELECT session FROM sessions WHERE status != 'published')"
            steps, sessions = conn.execute(f"SELECT count(*), count(DISTINCT session) FROM steps WHERE {hidden}"
                                           ).fetchone()
            head = conn.execute(f"SELECT hash FROM steps WHERE author = 'a' AND {hidden} "
                                "ORDER BY ts DESC, hash LIMIT 1").fetchone()
            assert book.facts[:3] == (steps, sessions, head and head[0])
