"""Syncthing errors, each with a message that tells the user what to do next."""


class SyncthingError(Exception):
    """Base of every Syncthing problem the user can act on."""


class SyncthingUnavailable(SyncthingError):
    """Nothing answers at the API address (not running, wrong port, timed out), or the
    answer broke off halfway (Syncthing stopped or restarted during the call)."""


class SyncthingAuthError(SyncthingError):
    """Syncthing answered but refused the API key."""


class SyncthingAPIError(SyncthingError):
    """Syncthing answered with an error status for a request twinsync made."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SyncthingConfigError(SyncthingError):
    """A Syncthing address, config.xml or folder setup that twinsync cannot use as is."""


class SyncthingHungError(SyncthingUnavailable):
    """Syncthing's port accepts the connection but no answer comes in time: it runs but is
    stuck or overloaded, so "start Syncthing" would be the wrong advice."""


class SyncthingBusyError(SyncthingUnavailable):
    """Syncthing 2.x is migrating its database: a stand-in server answers every request with a
    banner instead of the API until it is done. Wait; never stop it now."""
