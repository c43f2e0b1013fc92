"""Step hashes recomputed in child processes (`StepHashes`): every row is covered, whatever
its rowid; a bad step is found in any child's share; a child that cannot run, fails or is
no longer needed costs time, never a verdict."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from folders.stepsfile import (ALL_ROWS, StepHashes, add_step_hash_function, readonly_uri,
                               rowid_ranges)
from folders.trace import step_hash

ROWS = 3_000
MIN_STEPS = 1_000  # children from this many steps (50k by default: this keeps the test quick)
EXTREMES = (ALL_ROWS[0], -5, ALL_ROWS[1])  # rowids a hostile file may use


@given(st.integers(*ALL_ROWS), st.integers(*ALL_ROWS), st.integers(1, 16))
def test_rowid_ranges_are_every_rowid_once_in_order(a: int, b: int, parts: int) -> None:
    low, high = min(a, b), max(a, b)
    ranges = rowid_ranges(low, high, parts)
    assert 1 <= len(ranges) <= parts
    assert ranges[0][0] == ALL_ROWS[0] and ranges[-1][1] == ALL_ROWS[1]
    assert all(first <= last for first, last in ranges)
    assert all(ranges[k][1] + 1 == ranges[k + 1][0] for k in range(len(ranges) - 1))


def test_rowid_ranges_share_the_rows_evenly() -> None:
    sizes = [last - first + 1 for first, last in rowid_ranges(1, 1_000_000, 4)[1:-1]]
    assert sizes == [250_000, 250_000]


@pytest.fixture(scope="module")
def steps_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROWS good steps at rowids 1..ROWS, plus one at each of EXTREMES."""
    path = tmp_path_factory.mktemp("steps") / "steps.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE steps (hash TEXT PRIMARY KEY NOT NULL, session TEXT NOT NULL, "
                     "goal TEXT NOT NULL, parent TEXT, author TEXT NOT NULL, ts TEXT NOT NULL, "
                     "kind TEXT NOT NULL, content TEXT NOT NULL)")
        rowids = [*range(1, ROWS + 1), *EXTREMES]
        conn.executemany("INSERT INTO steps (rowid, hash, session, goal, parent, author, ts, kind, content) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(rowid, step_hash(*fields), *fields) for rowid, fields in
                          ((rowid, (f"s{rowid % 997}", "g", None, "a", "2026-12-08T00:00:00.000000Z",
                                    "inference", f"step {rowid}")) for rowid in rowids)])
        conn.commit()
    return path


def tampered(steps_db: Path, tmp_path: Path, rowid: int) -> tuple[Path, str]:
    """A copy in which the step at `rowid` no longer recomputes; that step's hash."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(steps_db, copy)
    with closing(sqlite3.connect(copy)) as conn:
        conn.execute("UPDATE steps SET content = 'forged' WHERE rowid = ?", (rowid,))
        conn.commit()
        return copy, conn.execute("SELECT hash FROM steps WHERE rowid = ?", (rowid,)).fetchone()[0]


def first_bad(db: Path, workers: int, python: str = sys.executable) -> str | None:
    with closing(sqlite3.connect(readonly_uri(db), uri=True)) as conn:
        add_step_hash_function(conn)
        with StepHashes(db, conn, workers, python=python, min_steps=MIN_STEPS) as hashes:
            return hashes.first_bad(conn)


def counting_python(tmp_path: Path) -> tuple[str, Path]:
    """An interpreter that notes each start in a file, so a test sees the children ran."""
    starts = tmp_path / "starts"
    script = tmp_path / "python"
    script.write_text(f'#!/bin/sh\necho started >> "{starts}"\nexec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return str(script), starts


@pytest.mark.parametrize("rowid", [1, ROWS // 2, ROWS, *EXTREMES])
def test_children_find_a_bad_step_wherever_it_is(steps_db: Path, tmp_path: Path, rowid: int) -> None:
    db, bad = tampered(steps_db, tmp_path, rowid)
    python, starts = counting_python(tmp_path)
    assert first_bad(db, 3, python) == bad
    assert starts.read_text().count("started") == 3


def test_a_child_answers_for_its_ranges_in_an_isolated_interpreter(steps_db: Path, tmp_path: Path) -> None:
    """What StepHashes starts, run by hand: with -I (no current directory, no PYTHONPATH) the
    installed package still imports, and the answer names the forged step of its ranges only."""
    db, bad = tampered(steps_db, tmp_path, 2_500)

    def child(*bounds: int) -> dict:
        done = subprocess.run([sys.executable, "-I", "-m", "folders.stephashes", str(db), *map(str, bounds)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert child(1, 1_000, 2_001, 3_000) == {"bad": bad}
    assert child(1, 2_499, 2_501, ALL_ROWS[1]) == {"bad": None}


def test_children_pass_a_file_whose_every_step_recomputes(steps_db: Path, tmp_path: Path) -> None:
    python, starts = counting_python(tmp_path)
    assert first_bad(steps_db, 2, python) is None
    assert starts.read_text().count("started") == 2


@pytest.mark.parametrize("python", ["/bin/false", "/nonexistent/python", "/bin/echo"],
                         ids=["fails", "cannot-start", "answers-nonsense"])
def test_a_child_that_gives_no_answer_costs_time_not_the_verdict(steps_db: Path, tmp_path: Path,
                                                                 python: str) -> None:
    db, bad = tampered(steps_db, tmp_path, ROWS - 1)
    assert first_bad(db, 2, python) == bad
    assert first_bad(steps_db, 2, python) is None


def test_children_not_needed_are_ended_when_the_check_stops(steps_db: Path, tmp_path: Path) -> None:
    """The caller refused the file before hashing (quick_check, the schema): leaving the
    block ends children that would otherwise hash for seconds."""
    script = tmp_path / "slow"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    with closing(sqlite3.connect(readonly_uri(steps_db), uri=True)) as conn:
        started = time.monotonic()
        with StepHashes(steps_db, conn, 2, python=str(script), min_steps=MIN_STEPS) as hashes:
            children = [child for _, child in hashes._children]
        assert time.monotonic() - started < 30
    assert len(children) == 2 and all(child.returncode is not None for child in children)


def test_few_steps_or_one_worker_are_hashed_in_this_process(tmp_path: Path, steps_db: Path) -> None:
    db, bad = tampered(steps_db, tmp_path, 7)
    python, starts = counting_python(tmp_path)
    assert first_bad(db, 1, python) == bad
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM steps WHERE rowid > ?", (MIN_STEPS - 10,))
        conn.commit()
    assert first_bad(db, 4, python) == bad
    assert not starts.exists()
