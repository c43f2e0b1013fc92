"""Last resort for a bug in twinsync (CLI or TUI): a report in the user log directory with
what a developer needs, and one sentence on screen saying where it is and what to send."""

from __future__ import annotations

import platform
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path

import platformdirs

from orchestrator import __version__

#: Exit code after a crash (the sysexits EX_SOFTWARE): not a user error, so a service restarts it.
EXIT_CRASH = 70


def write_crash_report(exc: BaseException, kind: str = "") -> Path:
    """The traceback, headed by twinsync's and Python's versions and the command line, so the
    file alone is enough to report the bug."""
    log_dir = platformdirs.user_log_path("twinsync", ensure_exists=True)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    path = log_dir / f"crash-{kind + '-' if kind else ''}{stamp}.txt"
    head = (f"twinsync {__version__}, Python {platform.python_version()} on {platform.platform()}\n"
            f"command: {' '.join(sys.argv)}\n\n")
    path.write_text(head + "".join(traceback.format_exception(exc)), encoding="utf-8")
    return path


def crash_message(program: str, exc: BaseException, report: Path) -> str:
    """The one sentence a crash shows: what happened, where the report is, what to send."""
    return (f"{program} crashed unexpectedly ({type(exc).__name__}): a bug in twinsync, not in "
            f"what you did. The report is in {report}; when you report the bug, attach that "
            "file (it holds the error, twinsync's version and the command) and say what you "
            "were doing.")
