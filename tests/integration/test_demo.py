"""`twinsync demo` as a newcomer runs it: real processes, seed metrics met, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_demo_runs_to_the_end_meets_the_seed_thresholds_and_leaves_no_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "demo", "--nodes", "3", "--no-tui",
                           "--duration", "12", "--json", "--dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=240)
    # Exit 1 with a report means a seed threshold was missed: show which, not only the log.
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    report = json.loads(done.stdout)
    assert report["meets"] is True, report
    assert set(report["nodes"]) == {"node1", "node2", "node3"}
    # every node asked both others three goals over the peer link: the access metric is theirs
    assert {n: m["access_samples"] for n, m in report["nodes"].items()} == dict.fromkeys(report["nodes"], 6)
    assert "no answer" not in done.stderr
    assert any("fork" in e for e in report["events"]) and any("conflict" in e for e in report["events"])
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
    assert "Traceback" not in done.stderr
    # log lines (a scan refused while a folder is paused on purpose) go to demo.log, not the screen
    assert not [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR", "INFO"))]
    assert f"node homes in {tmp_path / 'demo'}" in done.stderr and (tmp_path / "demo" / "demo.log").is_file()
    forks = subprocess.run([sys.executable, "-m", "orchestrator.cli", "forks", "--json",
                            "--home", str(Path(report["dir"]) / "node2")], capture_output=True, text=True)
    assert len(json.loads(forks.stdout)) == 1


def test_ctrl_c_stops_every_process_and_removes_the_temporary_directory(tmp_path):
    err = tmp_path / "stderr"
    temp = tmp_path / "tmp"
    temp.mkdir()
    with err.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "demo", "--nodes", "2", "--no-tui",
                                 "--duration", "60"], stderr=sink, stdout=subprocess.DEVNULL,
                                env={**os.environ, "TMPDIR": str(temp)})
        try:
            wait_for(lambda: "daemons running" in err.read_text(), timeout=120, what="the demo to start")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(120) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    said = err.read_text()
    (made,) = [line.split("node homes in ", 1)[1].split(";")[0] for line in said.splitlines() if "node homes in" in line]
    assert f"removed {made}" in said and not Path(made).exists() and list(temp.iterdir()) == []
    assert [p for p in psutil.process_iter(["cmdline"]) if made in " ".join(p.info["cmdline"] or [])] == []


def test_the_tui_shows_the_timeline_as_it_happens_and_the_end_without_error_toasts(tmp_path):
    """The real app on node1 of a real two-node demo, as `twinsync demo` opens it: the
    incidents appear under the tabs while the demo runs; at the end the results and "press
    q" appear, the demo's Syncthings stop, and no error from the stopped nodes reaches the
    screen (with a refresh every 0.2 s, several calls are in flight when they stop)."""
    import asyncio
    import threading

    from orchestrator.demo import Demo
    from tests.tui.helpers import until
    from tui.app import make_app

    demo = Demo(tmp_path / "demo", 2)
    outcome: dict = {}
    try:
        demo.setup()
        worker = threading.Thread(target=lambda: outcome.setdefault("metrics", demo.finish(8, threading.Event())))

        async def main():
            app = make_app(demo.nodes[0].home, refresh_s=0.2, demo=demo.timeline)
            app.animation_level = "none"
            async with app.run_test(size=(120, 40)) as pilot:
                panel = app.query_one("#timeline")
                worker.start()
                await until(pilot, lambda: "cut off from the others" in str(panel.render()),
                            "the cut-off on the timeline", timeout=60)
                assert "demo · " in str(panel.border_title) and not app.ended
                await pilot.press("3")  # a tab that reads snapshots, refreshed until the end
                await until(pilot, lambda: app.ended, "the demo's end", timeout=120)
                await until(pilot, lambda: "Press q to quit" in str(panel.render()), "the results", timeout=10)
                assert str(panel.border_title) == "demo ended — results"
                await until(pilot, lambda: "are stopped" in str(panel.render()), "the nodes stopped", timeout=60)
                text = str(panel.render())
                assert "node1 meets every seed threshold" in text and "node2 meets every seed threshold" in text
                assert "demo ended" in str(app.query_one("#header").render())
                await pilot.pause(1.0)  # calls that were in flight when Syncthing stopped have ended
                errors = [n.message for n in app._notifications if n.severity == "error"]
                assert errors == [] and not app.query_one("#banner").display
                assert app.check_action("refresh_now", ()) is False and app.check_action("show_tab", ("1",))
                await pilot.press("q")
            return app

        asyncio.run(main())
        worker.join(60)
        assert not worker.is_alive() and set(outcome["metrics"]) == {"node1", "node2"}
    finally:
        demo.close()
    assert [n.syncthing.running_pid() for n in demo.nodes] == [None, None]
    assert any("fork" in e for e in demo.events) and any("conflict" in e for e in demo.events)


class _Terminal:
    """A pseudo-terminal for the real `twinsync demo` with its TUI: everything the process
    draws or prints (the TUI and the demo's lines share it) is collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, name="pty-reader")
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the child closed its side
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        os.close(self.master)


def test_quit_the_tui_early_says_what_the_demo_still_does_and_ctrl_c_then_removes_everything(tmp_path):
    """`q` before the demo's end: the terminal says at once that the demo goes on and what it
    does; Ctrl-C during that (the demo's own thread still at work) stops every process,
    waits for that thread and removes the temporary directory, saying so."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    term = _Terminal([sys.executable, "-m", "orchestrator.cli", "demo", "--nodes", "2", "--duration", "60"],
                     env={**os.environ, "TMPDIR": str(temp), "TERM": "xterm-256color", "COLUMNS": "120"})
    try:
        wait_for(lambda: "\x1b[?1049h" in term.text, timeout=120, what="the TUI on its alternate screen")
        wait_for(lambda: "of reasoning" in term.text.split("\x1b[?1049h", 1)[-1], timeout=60,
                 what="the timeline in the TUI")
        os.write(term.master, b"q")
        wait_for(lambda: "the TUI closed before the demo's end" in term.text, timeout=30, what="the word after q")
        wait_for(lambda: "letting the nodes settle" in term.text, timeout=120, what="the demo's progress")
        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(120) == 130, term.text[-3000:]
    finally:
        term.close()
    said = term.text
    (made,) = {line.split("node homes in ", 1)[1].split(";")[0] for line in said.splitlines() if "node homes in" in line}
    assert f"removed {made}" in said, said[-3000:]
    assert not Path(made).exists() and list(temp.iterdir()) == []
    assert [p for p in psutil.process_iter(["cmdline"]) if made in " ".join(p.info["cmdline"] or [])] == []
    assert "Traceback" not in said


def test_a_restart_after_close_is_refused_so_no_daemon_outlives_the_demo(tmp_path):
    """The demo's thread restarts node1's daemon after its restore; a `close()` from the main
    thread (Ctrl-C) that came first must make that restart give up, not start a daemon
    nobody stops."""
    from orchestrator.demo import Demo, DemoNode, DemoStopped
    from syncthing.process import ManagedSyncthing

    (tmp_path / "demo").mkdir()
    demo = Demo(tmp_path / "demo", 2)
    node = DemoNode("node1", tmp_path / "demo" / "node1", ManagedSyncthing(tmp_path / "st"))
    demo.nodes.append(node)
    demo.close()
    with pytest.raises(DemoStopped):
        demo._start_daemon(node)
    assert node.daemon is None
    demo.close()  # again: nothing to do, nothing said twice
    assert [e.text for e in demo.timeline.view().entries] == []
