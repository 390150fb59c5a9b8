"""zcraq: CRAQ (Chain Replication with Apportioned Queries) on ZeroMQ and LevelDB."""

from zcraq.async_client import AsyncZClient
from zcraq.client import ZClient
from zcraq.clientwatch import Change
from zcraq.errors import (BadRequest, BatchFailed, ClientClosed, ConditionFailed, KeyNotFound, Timeout, Unavailable,
                          WriteOutcomeUnknown, ZcraqError)

__version__ = "0.1.0"
__all__ = ["AsyncZClient", "ZClient", "ZcraqError", "KeyNotFound", "Timeout", "WriteOutcomeUnknown", "Unavailable",
           "BadRequest", "ClientClosed", "BatchFailed", "ConditionFailed", "Change"]
