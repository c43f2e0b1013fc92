"""The `twinsync` command (the Typer app is in `orchestrator.cli.app`).

Anything unexpected writes a crash report to the user log directory and says where, exit
70. `twinsync --version` answers before Typer is imported: scripts and reasoning engines
ask it to check what they talk to, and Typer is most of the start-up of a light command.
"""

from __future__ import annotations

import sys

from orchestrator import __version__

#: Exit codes of every command; install/twinsync@.service does not restart the daemon on
#: a user error (nor a usage error, 2), which only a person can fix.
EXIT_USER_ERROR = 1


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(f"twinsync {__version__}")
        return
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from orchestrator.cli.app import app

        app()
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback on the user's screen
        from orchestrator.crash import EXIT_CRASH, crash_message, write_crash_report

        print(crash_message("twinsync", exc, write_crash_report(exc)), file=sys.stderr)
        sys.exit(EXIT_CRASH)
