"""`twinsync run`."""

from __future__ import annotations

import logging
import signal

from orchestrator.cli.common import HomeOption
from orchestrator.daemon import Daemon
from orchestrator.node import Node


def run(home: HomeOption) -> None:
    """Run the daemon: watch frames.shared/, validate, commit to Git, queue conflicts.

    Logs one line per batch to stderr. SIGTERM or Ctrl-C finishes the batch in flight and
    exits 0. Changes made while it was stopped are picked up at start. One daemon per node
    home: exits 1 when another one runs. Each part that fails is logged and restarted; the
    heartbeat (heartbeat.json) tells `status`, `doctor` and the TUI how it is doing.

    Example: twinsync run
    """
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Its one warning that is not an error: a job whose turn came while its last run was still
    # queued behind another (a first fingerprint of a big trace takes seconds). The jobs
    # coalesce, so nothing is lost, and a user reading the log would think something was.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    with Node.open(home) as node:  # what the client fixes by itself is logged, not also printed
        daemon = Daemon(node)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: daemon.stop())
        daemon.run()
