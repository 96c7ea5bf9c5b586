"""Exceptions raised by fastlimit.

They are defined beside the compiled table, which raises them too, and
re-exported here.
"""

from fastlimit_ext.errors import FastlimitError, InvalidLimit, TableError, TableFull

__all__ = ["FastlimitError", "InvalidLimit", "TableError", "TableFull"]
