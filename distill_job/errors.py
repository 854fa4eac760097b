"""The one error type the command line turns into a one-line message."""


class DistillError(Exception):
    """A problem the user can fix (bad teacher, bad option); printed without a traceback."""
