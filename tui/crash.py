"""Last resort for a bug in the TUI: the same report and sentence as the CLI's
(orchestrator.crash), the report named for the TUI."""

from __future__ import annotations

from orchestrator.crash import EXIT_CRASH, crash_message
from orchestrator.crash import write_crash_report as _write

__all__ = ["EXIT_CRASH", "crash_message", "write_crash_report"]


def write_crash_report(exc: BaseException) -> str:
    return str(_write(exc, "tui"))
