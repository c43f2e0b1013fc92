"""`python -m orchestrator.cli`: the same as the `twinsync` command (used to start daemons)."""

from orchestrator.cli import main

main()
