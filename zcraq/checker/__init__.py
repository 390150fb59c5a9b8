"""Linearizability checking of key-value histories recorded against zcraq.

A history is a JSON Lines file of invoke/completion events (see :mod:`.history`); the checker
(see :mod:`.linear`) decides whether some total order of the operations respects both their
real-time intervals and register semantics, and otherwise reports a small window of
operations that proves the violation.
"""

from __future__ import annotations

from .history import HistoryError, Operation, load_history, operations_from_events, parse_history
from .linear import Result, check_file, check_history

__all__ = [
    "HistoryError",
    "Operation",
    "Result",
    "check_file",
    "check_history",
    "load_history",
    "operations_from_events",
    "parse_history",
]
