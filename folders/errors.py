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


#: Longest stretch of a user's value (an id, a path, a name) that a message repeats.
MAX_ECHO = 100


def echo(value: object, *, quoted: bool = True) -> str:
    """A value the user gave, as a message repeats it: escaped like repr() so a newline or a
    control character cannot break the one-line message, and cut after MAX_ECHO characters
    with its length said, so a 5,000-character id costs one line of output, not 10 KB.
    `quoted=False` leaves the quotes off a string (paths read better without them)."""
    text = repr(value) if quoted or not isinstance(value, str) else repr(value)[1:-1]
    if len(text) <= MAX_ECHO:
        return text
    return f"{text[:MAX_ECHO]}… ({len(str(value))} characters)"
