"""The one exception type a user can cause; the CLI turns it into one line and exit 1."""


class HpstudyError(Exception):
    """A problem with the user's input or environment, explained in one line."""
