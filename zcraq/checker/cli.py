"""Command-line entry point of the checker: ``zcraq verify HISTORY.jsonl``.

Exit status: 0 when the history is linearizable, 1 when it is not, 2 when it is malformed or
unreadable.
"""

from __future__ import annotations

import argparse
import sys

from .history import HistoryError
from .linear import check_file

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Check the history file named in ``argv``, print the verdict, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="zcraq verify",
        description="Check that a JSON Lines key-value history is linearizable.",
    )
    parser.add_argument("history", help="JSON Lines history file")
    parser.add_argument(
        "--shrink-budget",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time allowed for shrinking a failing window (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        result = check_file(args.history, shrink_budget=args.shrink_budget)
    except HistoryError as exc:
        print(f"malformed history {args.history}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read history {args.history}: {exc}", file=sys.stderr)
        return 2
    print(result.verdict())
    if result.ok:
        return 0
    print(result.describe())
    return 1
