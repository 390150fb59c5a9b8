"""Where the value of ``zcraq client write KEY VALUE`` comes from.

``-`` reads standard input, ``@PATH`` the file at PATH, anything else (or anything at all with
``literal``) is the argument's own bytes, exactly as the shell passed them (``os.fsencode``
undoes Python's decoding of the command line, so a value that is not UTF-8 survives). Standard
input and files are read in binary, and never more than the cluster's limit and one byte: a
larger value is refused without reading the rest.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from zcraq.errors import TooLarge

STDIN = "-"
FILE_PREFIX = "@"


class ValueInputError(Exception):
    """The value's file cannot be read (a usage error: nothing was sent)."""


class ValueInput:
    """A value named on the command line. A file is opened at once, so that a missing one is
    reported before anything is sent; ``read`` takes the bytes."""

    def __init__(self, argument: str, *, literal: bool = False) -> None:
        self._data: bytes | None = None
        self._stream: BinaryIO | None = None
        self.origin = "the argument"
        if literal or not (argument == STDIN or argument.startswith(FILE_PREFIX)):
            self._data = os.fsencode(argument)
        elif argument == STDIN:
            self._stream = sys.stdin.buffer
            self.origin = "standard input"
        else:
            path = argument[len(FILE_PREFIX):]
            if not path:
                raise ValueInputError("'@' needs a file name (@PATH); use --literal to store '@' itself")
            try:
                self._stream = open(path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as error:
                raise ValueInputError(f"cannot read {path}: {error.strerror or error}") from None
            self.origin = path

    @property
    def streamed(self) -> bool:
        """Read from standard input or a file (so its size is known only by reading)."""
        return self._stream is not None

    def read(self, limit: int) -> bytes:
        """The value; TooLarge when it is longer than ``limit`` bytes."""
        if self._stream is None:
            assert self._data is not None
            data = self._data
        else:
            try:
                data = self._stream.read(limit + 1)
            except OSError as error:
                raise ValueInputError(f"cannot read {self.origin}: {error.strerror or error}") from None
        if len(data) > limit:
            raise TooLarge(f"value is larger than {limit} bytes (from {self.origin})")
        return data

    def close(self) -> None:
        if self._stream is not None and self._stream is not sys.stdin.buffer:
            self._stream.close()


__all__ = ["ValueInput", "ValueInputError", "STDIN", "FILE_PREFIX"]
