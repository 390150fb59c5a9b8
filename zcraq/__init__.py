"""zcraq: CRAQ (Chain Replication with Apportioned Queries) on ZeroMQ and LevelDB."""

from zcraq.client import ZClient
from zcraq.errors import BadRequest, KeyNotFound, Timeout, Unavailable, WriteOutcomeUnknown, ZcraqError

__version__ = "0.1.0"
__all__ = ["ZClient", "ZcraqError", "KeyNotFound", "Timeout", "WriteOutcomeUnknown", "Unavailable", "BadRequest"]
