"""Side effects and wiring: config, state.db, the node services, the daemon and the CLI."""
