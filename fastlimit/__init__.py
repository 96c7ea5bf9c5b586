"""Exact rate limiting shared by every process that maps one table file."""

from .errors import FastlimitError, InvalidLimit, TableError, TableFull
from .limiter import COMPILED, Decision, Limiter, default_path, table_stats
from .policy import MAX_LIMIT, Policy, parse, parse_many

__all__ = [
    "COMPILED",
    "Decision",
    "FastlimitError",
    "InvalidLimit",
    "Limiter",
    "MAX_LIMIT",
    "Policy",
    "TableError",
    "TableFull",
    "default_path",
    "parse",
    "parse_many",
    "table_stats",
]
