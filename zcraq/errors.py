"""Exceptions a zcraq client raises, and the wire error codes they come from.

Every client failure is a ``ZcraqError``; the subclass says what a caller can do about it.
"""

from __future__ import annotations


class ZcraqError(Exception):
    """Base class of every error zcraq raises to a client."""

    code = "internal"


class KeyNotFound(ZcraqError):
    """The key has no committed value (never written, or deleted)."""

    code = "not_found"


class Timeout(ZcraqError):
    """No answer within the deadline. For a write, the outcome is unknown: see WriteOutcomeUnknown.
    ``delivered`` is False when the connection never came up, so the request surely did not arrive."""

    code = "timeout"

    def __init__(self, message: str, delivered: bool = True) -> None:
        super().__init__(message)
        self.delivered = delivered


class WriteOutcomeUnknown(Timeout):
    """A write or delete was sent but its outcome is unknown: it may or may not have committed."""

    code = "unknown_outcome"


class Unavailable(ZcraqError):
    """No node or coordinator could serve the request right now (chain empty, node not serving,
    topology changing). Retrying later may succeed."""

    code = "unavailable"


class ConditionFailed(ZcraqError):
    """A conditional write or delete (``if_version``) was not applied: the key's current version
    was not the one named. ``version`` is the current version the head saw (0: the key has no
    value), when the server said it."""

    code = "condition_failed"

    def __init__(self, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


class ClientClosed(ZcraqError):
    """The client was closed before the call ended (or before it began). Nothing was applied:
    a write or delete that may have been is reported as ``WriteOutcomeUnknown`` instead."""

    code = "closed"


class AuthenticationError(ZcraqError):
    """The server refused this client's CURVE handshake: no key where one is needed, a key not in
    its allow-list, or keys where it has none. Retrying with the same keys fails again."""

    code = "unauthenticated"


class Forbidden(ZcraqError):
    """The server knows this client's key, but the key's role may not make this request."""

    code = "forbidden"


class BadRequest(ZcraqError):
    """The request was malformed or exceeded a limit; retrying it unchanged will fail again."""

    code = "bad_request"


class TooLarge(BadRequest):
    """A key or value over the cluster's limits."""

    code = "too_large"


class BatchFailed(ZcraqError):
    """Some keys of a write_many or delete_many failed while others did not. ``results`` holds, per
    key in the order given, its version, or the error the single write or delete would have raised:
    ``WriteOutcomeUnknown`` (it may or may not have committed) or ``Unavailable`` (it was not sent).
    ``existed``, per key: for a deletion that succeeded, whether the key had a value; else None.
    ``code`` is ``unknown_outcome`` when any key's outcome is unknown, else the first failure's."""

    def __init__(self, message: str, results: list[int | ZcraqError], existed: list[bool | None]) -> None:
        super().__init__(message)
        self.results = results
        self.existed = existed
        failures = [r for r in results if isinstance(r, ZcraqError)]
        unknown = any(isinstance(r, WriteOutcomeUnknown) for r in failures)
        self.code = "unknown_outcome" if unknown or not failures else failures[0].code

    @property
    def failed(self) -> dict[int, ZcraqError]:
        """The failed keys' positions and errors."""
        return {i: r for i, r in enumerate(self.results) if isinstance(r, ZcraqError)}


# Wire error codes (PROTOCOL.md) -> the exception a client raises for them.
ERROR_CODES: dict[str, type[ZcraqError]] = {
    "not_found": KeyNotFound,
    "bad_request": BadRequest,
    "too_large": TooLarge,
    "timeout": Timeout,
    "unknown_outcome": WriteOutcomeUnknown,
    "condition_failed": ConditionFailed,
    "unavailable": Unavailable,
    "not_head": Unavailable,
    "not_tail": Unavailable,
    "wrong_epoch": Unavailable,
    "busy": Unavailable,
    "incompatible": BadRequest,
    "unknown_node": Unavailable,
    "wrong_partition": Unavailable,  # the node has no replica of it (now): ask the table again
    "not_assigned": Unavailable,
    "forbidden": Forbidden,
    "node_id_taken": BadRequest,
    "unauthenticated": AuthenticationError,
    "internal": ZcraqError,
}


def error_for(code: str, message: str) -> ZcraqError:
    return ERROR_CODES.get(code, ZcraqError)(message)
