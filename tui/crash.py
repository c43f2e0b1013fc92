"""Last resort for a bug in the TUI: a report in the user log directory, one line on screen."""

from __future__ import annotations

import traceback
from datetime import datetime, timezone

import platformdirs

EXIT_CRASH = 70


def write_crash_report(exc: BaseException) -> str:
    log_dir = platformdirs.user_log_path("twinsync", ensure_exists=True)
    path = log_dir / f"crash-tui-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.txt"
    path.write_text("".join(traceback.format_exception(exc)))
    return str(path)
