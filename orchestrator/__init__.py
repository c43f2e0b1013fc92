"""Side effects and wiring: config, state.db, the node services, the daemon and the CLI."""

#: The one place the version is written (pyproject.toml reads it): `twinsync --version` prints
#: it without importlib.metadata, which would cost every command a scan of site-packages.
__version__ = "0.1.0"
