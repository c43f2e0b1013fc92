"""One error tree for everything a user can fix; the CLI prints the message as is."""


class TwinsyncError(Exception):
    """Base of every error whose message tells the user what happened and what to do."""


class HomeError(TwinsyncError):
    """The node home is missing, already exists, or cannot be written."""


class KeyFileError(TwinsyncError):
    """A key file is missing, unreadable, malformed or too widely readable."""


class InviteError(TwinsyncError):
    """An invite code is malformed, altered, truncated or our own."""


class FrameError(TwinsyncError):
    """A frame cannot be parsed, verified or saved."""


class TraceError(TwinsyncError):
    """A trace database, step, segment or snapshot is unusable."""
