"""A bug in twinsync: one sentence that says where the report is and what to send with it
(no "Please file it" with nowhere to file it), and a report that is enough on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from orchestrator.crash import EXIT_CRASH

#: The real entry point, with one command that has a bug.
BUGGY = textwrap.dedent("""
    from orchestrator.cli import main
    from orchestrator.cli.app import app

    @app.command()
    def buggy() -> None:
        raise RuntimeError("a bug")

    main()
""")


def test_a_crash_says_where_the_report_is_and_what_to_send(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", BUGGY, "buggy"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == EXIT_CRASH
    assert "Traceback" not in done.stderr
    assert "Please file it" not in done.stderr
    reports = list((tmp_path / "state").rglob("crash-*.txt"))
    assert len(reports) == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith("twinsync crashed unexpectedly (RuntimeError): a bug in twinsync")
    assert f"The report is in {reports[0]}" in message and "attach that file" in message
    report = reports[0].read_text()
    assert report.startswith("twinsync ") and "command: " in report and "RuntimeError: a bug" in report
