"""Errors raised by zcraq stores, and the argument checks every store shares."""

from __future__ import annotations

# Versions are stored as 8-byte big-endian unsigned integers on disk.
MAX_VERSION = 2**64 - 1


class StoreError(Exception):
    """A store could not be opened or used (locked directory, corruption, I/O failure)."""


class StoreClosedError(StoreError, RuntimeError):
    """The store was used after ``close()``."""


def check_key(key: str) -> bytes:
    """Return the key's UTF-8 bytes; reject non-strings and strings UTF-8 cannot encode."""
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"key is not encodable as UTF-8: {key!r}") from exc


def check_version(version: int) -> int:
    if not isinstance(version, int) or isinstance(version, bool):
        raise TypeError(f"version must be int, not {type(version).__name__}")
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(f"version must be in 1..2**64-1, got {version}")
    return version


def check_value(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return bytes(value)
