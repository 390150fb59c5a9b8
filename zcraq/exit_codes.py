"""The exit codes of ``zcraq client``: one per thing a script can do about a failure.

    0  success
    1  not found: the key has no committed value
    2  usage or config error: command line, config file, key file or value file
    3  unavailable or timeout: nothing was applied; or a read, status or health got no
       answer; or health found a member that does not serve
    4  outcome unknown: a write or delete may or may not have been applied
    5  refused: too large, bad request, forbidden
    6  authentication failed: the server refused this client's CURVE keys
    7  any other error
    8  condition failed: a write or delete with --if-version was not applied (the key's current
       version is another)
  130  interrupted (Ctrl-C); an interrupted write or delete may or may not have been applied

An exception maps to its code by class (zcraq/errors.py): ``WriteOutcomeUnknown`` is a
``Timeout`` but means 4, ``TooLarge`` is a ``BadRequest`` and means 5.
"""

from __future__ import annotations

import textwrap

import click

from zcraq.errors import (AuthenticationError, BadRequest, ConditionFailed, Forbidden, KeyNotFound, Timeout,
                          Unavailable, WriteOutcomeUnknown, ZcraqError)
from zcraq.toml_tables import ConfigError

SUCCESS = 0
NOT_FOUND = 1
USAGE = 2
UNAVAILABLE = 3
OUTCOME_UNKNOWN = 4
REFUSED = 5
AUTHENTICATION = 6
OTHER = 7
CONDITION_FAILED = 8
INTERRUPTED = 130

# (code, meaning): the table that help texts and the README show.
TABLE: tuple[tuple[int, str], ...] = (
    (SUCCESS, "success"),
    (NOT_FOUND, "not found: the key has no committed value"),
    (USAGE, "usage or config error: command line, config file, key file or value file"),
    (UNAVAILABLE, "unavailable or timeout: nothing was applied; or a read, status or health got no answer; "
                  "or health found a member that does not serve"),
    (OUTCOME_UNKNOWN, "outcome unknown: a write or delete may or may not have been applied"),
    (REFUSED, "refused: too large, bad request, forbidden"),
    (AUTHENTICATION, "authentication failed: the server refused this client's CURVE keys"),
    (OTHER, "any other error"),
    (CONDITION_FAILED, "condition failed: a write or delete with --if-version was not applied (the key's current "
                       "version is another)"),
    (INTERRUPTED, "interrupted (Ctrl-C); an interrupted write or delete may or may not have been applied"),
)

# The "error" of a JSON error object for failures that are not a ZcraqError.
USAGE_ERROR = "usage"
INTERRUPTED_ERROR = "interrupted"
OTHER_ERROR = "internal"


def exit_code_for(error: BaseException) -> int:
    """The exit code a command that failed with ``error`` ends with."""
    match error:
        case KeyNotFound():
            return NOT_FOUND
        case click.UsageError() | ConfigError():
            return USAGE
        case WriteOutcomeUnknown():  # before Timeout, its base class
            return OUTCOME_UNKNOWN
        case Timeout() | Unavailable():
            return UNAVAILABLE
        case BadRequest() | Forbidden():  # TooLarge is a BadRequest
            return REFUSED
        case AuthenticationError():
            return AUTHENTICATION
        case ConditionFailed():
            return CONDITION_FAILED
        case KeyboardInterrupt():
            return INTERRUPTED
        case _:
            return OTHER


def error_code_for(error: BaseException) -> str:
    """The ``error`` of the JSON object that reports ``error``: the wire code of a ZcraqError
    (PROTOCOL.md §4, e.g. not_found, unavailable, timeout, unknown_outcome, too_large), else
    usage, interrupted or internal."""
    match error:
        case ZcraqError():
            return error.code
        case click.UsageError() | ConfigError():
            return USAGE_ERROR
        case KeyboardInterrupt():
            return INTERRUPTED_ERROR
        case _:
            return OTHER_ERROR


def help_table(width: int = 76) -> str:
    """The table as ``--help`` shows it (click keeps a paragraph that starts with \\b as it is)."""
    lines = ["\b", "Exit codes:"]
    for code, meaning in TABLE:
        lines.extend(textwrap.wrap(meaning, width, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7))
    return "\n".join(lines)


__all__ = ["SUCCESS", "NOT_FOUND", "USAGE", "UNAVAILABLE", "OUTCOME_UNKNOWN", "REFUSED", "AUTHENTICATION", "OTHER",
           "CONDITION_FAILED",
           "INTERRUPTED", "TABLE", "exit_code_for", "error_code_for", "help_table"]
