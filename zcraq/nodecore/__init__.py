"""The CRAQ protocol for one node, as a pure state machine (see core.py for the theory)."""

from zcraq.nodecore.core import UNSAFE_FAULTS, NodeCore, NodeTimings

__all__ = ["UNSAFE_FAULTS", "NodeCore", "NodeTimings"]
