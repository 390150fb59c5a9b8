"""Deterministic simulation of zcraq: the real protocol cores under a seeded network and clock."""

from zcraq.sim.partitioned import PARTITIONED_NEMESIS_KINDS
from zcraq.sim.scenario import NEMESIS_KINDS, SimConfig, SimResult, simulate

__all__ = ["NEMESIS_KINDS", "PARTITIONED_NEMESIS_KINDS", "SimConfig", "SimResult", "simulate"]
