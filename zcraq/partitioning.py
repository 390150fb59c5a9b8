"""Which partition a key belongs to: a stable hash every client and node computes alike.

partition = CRC-32 (IEEE 802.3, as zlib.crc32, Go's crc32.ChecksumIEEE, Java's CRC32) of the
key's UTF-8 bytes, modulo the cluster's partition count. It never changes for a cluster: the count
is fixed when the cluster is created, and a key's partition holds every version of it.
"""

from __future__ import annotations

import zlib

from zcraq.messages import MAX_PARTITION

MAX_PARTITIONS = MAX_PARTITION + 1


def partition_of(key: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) holding ``key``."""
    if partitions == 1:
        return 0
    return zlib.crc32(key.encode()) % partitions


def check_partition_count(partitions: object) -> int:
    """``partitions`` if it is a valid count; ValueError says why not."""
    if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"the partition count must be an integer from 1 to {MAX_PARTITIONS}, not {partitions!r}")
    return partitions


__all__ = ["MAX_PARTITIONS", "check_partition_count", "partition_of"]
