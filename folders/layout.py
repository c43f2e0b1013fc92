"""Where everything lives in a node home (DESIGN §1), and what a node may be called."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from folders.errors import HomeError, echo

NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_node_name(name: str) -> str:
    """Names end up in Syncthing folder IDs and paths, so only letters, digits, `-` and `_`."""
    if not NODE_NAME_RE.match(name or ""):
        raise HomeError(f"Node name {echo(name)} is not allowed; use 1-63 letters, digits, '-' or '_' "
                        "starting with a letter or digit (no spaces or slashes), e.g. 'laptop'.")
    return name


class NoNodeError(HomeError):
    """No node home (no twinsync.toml) where one was asked for: `init` not run yet, or a
    wrong --home. Its message ends with the fix, so callers can show it as it is."""


@dataclass(frozen=True)
class NodeLayout:
    """Paths of one node home; building the paths touches nothing on disk."""

    home: Path

    @property
    def config(self) -> Path:
        return self.home / "twinsync.toml"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def private_key(self) -> Path:
        return self.keys_dir / "node.key"

    @property
    def public_key(self) -> Path:
        return self.keys_dir / "node.pub"

    @property
    def api_key(self) -> Path:
        """Syncthing's API key, kept out of twinsync.toml so the config can be shown freely."""
        return self.keys_dir / "syncthing-api.key"

    @property
    def trusted(self) -> Path:
        return self.home / "trusted.toml"

    @property
    def trace_db(self) -> Path:
        return self.home / "trace.db"

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def frames_git(self) -> Path:
        return self.home / "frames.git"

    @property
    def frames_local(self) -> Path:
        return self.home / "frames.local"

    @property
    def frames_shared(self) -> Path:
        return self.home / "frames.shared"

    @property
    def modules_shared(self) -> Path:
        """Syncthing folder twinsync-modules: every node's published modules."""
        return self.home / "modules.shared"

    @property
    def modules_git(self) -> Path:
        """Git history of modules.shared/, outside it (as frames.git)."""
        return self.home / "modules.git"

    @property
    def modules_run(self) -> Path:
        """Private checkouts of approved module versions, taken from modules.git: what runs."""
        return self.home / "modules.run"

    @property
    def recovery_root(self) -> Path:
        return self.home / "trace" / "recovery"

    def recovery(self, node: str) -> Path:
        return self.recovery_root / check_node_name(node)

    @property
    def syncthing_home(self) -> Path:
        """Home of a managed Syncthing (`init --managed`)."""
        return self.home / "syncthing"

    def require(self) -> NodeLayout:
        """Fail early, with the fix, when the home was never initialised: every command says
        the same sentence, so a wrong --home and a missing `init` read alike everywhere."""
        if not self.config.is_file():
            raise NoNodeError(f"No twinsync node at {self.home}; run `twinsync init --name NAME` "
                              "first (or pass --home).")
        return self
