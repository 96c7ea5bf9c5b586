"""Exceptions raised by fastlimit."""


class FastlimitError(Exception):
    """Base class of the errors that fastlimit raises for its own reasons."""


class InvalidLimit(FastlimitError, ValueError):
    """A rate limit string or value that cannot be parsed or is out of range."""


class TableError(FastlimitError, OSError):
    """A table file that is missing, of the wrong format, or unsafe to map."""


class TableFull(FastlimitError):
    """The table has no room left for another kind of policy."""
