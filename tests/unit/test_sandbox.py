"""The sandbox and the reasoner on a real node home (no Syncthing needed: publishing only
asks Syncthing to scan, and says so in the log when it cannot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from folders.layout import NodeLayout
from folders.trace import TraceDB
from orchestrator import sandbox
from orchestrator.config import NodeConfig, ReasonerSettings, save_config, write_api_key
from orchestrator.init import _build_home
from orchestrator.node import Node
from orchestrator.reasoner import ReasonerError, parse_output, reason
from orchestrator.sandbox import Program

PY = sys.executable
LIMITS = sandbox.Limits(timeout_s=2, memory_mb=256, max_output=4096)


def test_a_crash_is_not_taken_for_memory_when_the_caller_itself_is_big():
    """Linux hands the parent's peak memory to the child: a caller bigger than the child's
    limit (a long-running test process, a daemon) must not make every crash look like memory."""
    ballast = bytearray(96 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched, so it counts in our peak
    result = sandbox.run([PY, "-c", "import sys; sys.exit(3)"],
                         limits=sandbox.Limits(timeout_s=5, memory_mb=64, max_output=4096), what="the probe")
    assert result.status == sandbox.CRASHED, result
    del ballast


def test_each_way_a_child_can_misbehave_is_one_status_with_one_sentence(monkeypatch):
    monkeypatch.setenv("TWINSYNC_HOME", "/secret/home")
    monkeypatch.setenv("STGUIAPIKEY", "secret-key")
    cases = {
        "print('hi')": sandbox.OK,
        "while True: pass": sandbox.TIMEOUT,
        "x = bytearray(600 * 1024 * 1024)": sandbox.MEMORY,
        "import sys; sys.exit(3)": sandbox.CRASHED,
        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)": sandbox.CRASHED,
        "print('x' * 10000)": sandbox.GARBAGE,
    }
    for code, status in cases.items():
        result = sandbox.run([PY, "-c", code], limits=LIMITS, what="the probe")
        assert result.status == status, (code, result)
        assert (result.reason == "") == (status == sandbox.OK)
        assert result.reason.startswith("the probe") or result.ok
        assert result.reason.count(". ") == 0 and (result.ok or result.reason.endswith("."))
    assert sandbox.run(["/no/such/program"], limits=LIMITS).status == sandbox.CRASHED


def test_a_child_sees_no_secrets_works_in_scratch_and_leaves_nothing_running(monkeypatch, tmp_path):
    monkeypatch.setenv("TWINSYNC_HOME", str(tmp_path))
    monkeypatch.setenv("SECRET_TOKEN", "x")
    key = open(tmp_path / "node.key", "wb")  # an open file the daemon might hold
    try:
        sleeper = f"import time; time.sleep(60)  # {tmp_path.name}"  # this test's own, not another run's
        probe = ("import json, os, sys, subprocess, time\n"
                 f"subprocess.Popen([sys.executable, '-c', {sleeper!r}])\n"
                 f"subprocess.Popen([sys.executable, '-c', {sleeper!r}], start_new_session=True)\n"
                 "print(json.dumps({'env': sorted(os.environ), 'cwd': os.getcwd(), 'fds': os.listdir('/proc/self/fd')}))\n")
        result = sandbox.run([PY, "-c", probe], limits=LIMITS, scratch_root=tmp_path)
    finally:
        key.close()
    seen = json.loads(result.stdout)
    assert result.ok and "TWINSYNC_HOME" not in seen["env"] and "SECRET_TOKEN" not in seen["env"]
    assert set(seen["env"]) <= {*sandbox.ENV_WHITELIST, "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                                "PYTHONIOENCODING", sandbox.RUN_MARKER}
    assert set(seen["fds"]) <= {"0", "1", "2", "3"}  # 3: listdir's own handle
    assert Path(seen["cwd"]).name == "work" and not Path(seen["cwd"]).exists()  # scratch removed
    assert not [p for p in psutil.process_iter(["cmdline"]) if sleeper in " ".join(p.info["cmdline"] or [])]


def make_home(tmp_path: Path, name: str = "solo", reasoner: dict | None = None) -> Node:
    layout = NodeLayout(tmp_path / name)
    layout.home.mkdir()
    _build_home(layout.home, layout, name)
    write_api_key(layout, "unused")
    settings = ReasonerSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in (reasoner or {}).items()})
    save_config(layout, NodeConfig(name=name, device_id="X", syncthing_url="http://127.0.0.1:9", reasoner=settings))
    return Node.open(layout.home)


def script(tmp_path: Path, body: str) -> Program:
    path = tmp_path / f"r{len(list(tmp_path.iterdir()))}.py"
    path.write_text("import json, sys\nrequest = json.load(sys.stdin)\n" + body)
    return Program((PY, str(path)), "the test reasoner")


def test_reason_publishes_a_coherent_answer_and_keeps_every_failure_as_a_shadow(tmp_path):
    node = make_home(tmp_path, reasoner={"command": [PY, "-c", "print('{}')"], "timeout_s": 5, "memory_mb": 256})
    with node:
        good = reason(node, "plan the week", program=script(tmp_path, (
            "print(json.dumps({'steps': [{'kind': 'observation', 'content': request['goal'] + ' is busy'}],"
            " 'conclusion': 'move gym to Tuesday'}))\n")))
        assert (good.status, good.outcome, good.conclusion, good.steps) == ("published", "ok", "move gym to Tuesday", 3)
        with TraceDB(node.layout.trace_db, "solo") as trace:
            assert [s.status for s in trace.query("plan the week")] == ["published"]
        failures = {
            "garbage": script(tmp_path, "print('not json')\n"),
            "timeout": script(tmp_path, "while True: pass\n"),
            "crashed": script(tmp_path, "raise SystemExit(2)\n"),
        }
        for outcome, program in failures.items():
            result = reason(node, "plan the week", program=program, timeout_s=1)
            assert (result.status, result.outcome, result.conclusion) == ("shadow", outcome, None), result
            with TraceDB(node.layout.trace_db, "solo") as trace:
                steps = trace.session_steps(result.session)
            assert steps[-1].content.endswith(result.reason) and result.reason
        configured = reason(node, "plan the week")  # [reasoner] command prints {} → garbage
        assert configured.outcome == "garbage" and "conclusion" in configured.reason
    with make_home(tmp_path, "bare") as bare, pytest.raises(ReasonerError, match=r"\[reasoner\]"):
        reason(bare, "plan the week")


@pytest.mark.parametrize("output", [b"", b"\xff", b"[]", b'{"conclusion": ""}', b'{"conclusion": "x", "steps": 3}',
                                    b'{"conclusion": "x", "steps": [{"kind": "decision", "content": "y"}]}',
                                    b'{"conclusion": "x", "steps": [{"kind": "observation"}]}'])
def test_output_that_is_not_the_protocol_is_refused_in_one_sentence(output):
    with pytest.raises(ReasonerError) as caught:
        parse_output(output, "the test reasoner")
    assert str(caught.value).startswith("the test reasoner") and "\n" not in str(caught.value)
