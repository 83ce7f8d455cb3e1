"""The one exception type that means "the user gave bad input".

The CLI turns a `UserError` into a single line on stderr and exit code 2 (no traceback). Anything
else escaping a command is a failure of sweeper itself (exit code 1).
"""


class UserError(Exception):
    """Bad input: a field, file or value that is not what was expected. The message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


def first_line(err: object) -> str:
    """The first line of an exception's (or a message's) text, for a one-line error; its type if empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
