"""``zcraq client scan``: the keys of a range or with a prefix, with their values, a line per key
("KEY: VALUE", values shown as by read), paging through the range with scan requests
(PROTOCOL.md §8.9). Exit 0 also when no key matched. In a partitioned cluster every partition is
paged through and the keys merged in key order."""

from __future__ import annotations

from typing import Any

import click

from zcraq.cli_client import (Outcome, Settings, read_mode, read_mode_options, run_action, shared_options, shown_value,
                              value_json)
from zcraq.client import ZClient
from zcraq.clientscan import DEFAULT_PAGE_KEYS
from zcraq.messages import MAX_SCAN_KEYS


@click.command("scan")
@click.option("--prefix", default="", help="Only keys that begin with this.")
@click.option("--start", default="", help="From this key on (inclusive).")
@click.option("--end", default=None, help="Up to this key (exclusive).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many keys (default: all).")
@click.option("--page-keys", type=click.IntRange(1, MAX_SCAN_KEYS), default=DEFAULT_PAGE_KEYS, show_default=True,
              help="Keys asked of a node per request.")
@click.option("--keys-only", is_flag=True, help="Print the keys alone, a line each.")
@read_mode_options
@shared_options
@click.pass_obj
def scan(settings: Settings, prefix: str, start: str, end: str | None, limit: int | None, page_keys: int,
         keys_only: bool, mode: str, max_staleness: float | None) -> None:
    """Print every key of the range that has a value, in key order (UTF-8 bytes), with its value.

    Each value is what a read of its key (strong by default) returned while the scan ran; the whole
    is not a snapshot of one moment. JSON: {"keys": [{"key": KEY, "version": N, "value": TEXT or
    null, "value_base64": B64}, ...]}.
    """
    how = read_mode(mode, max_staleness)

    def action(zclient: ZClient) -> Outcome:
        rows: list[dict[str, Any]] = []
        lines: list[bytes] = []
        for key, value, version in zclient.scan(prefix, start=start, end=end, limit=limit, page_keys=page_keys,
                                                node=settings.node, mode=how.mode, max_staleness=how.seconds):
            text, shown = shown_value(value)
            rows.append({"key": key, "version": version, **value_json(value, text)})
            lines.append(key.encode("utf-8", "backslashreplace") + b"\n" if keys_only
                         else f"{key}: ".encode("utf-8", "backslashreplace") + shown + b"\n")
        return Outcome({"keys": rows}, b"".join(lines))

    run_action(settings, action)


__all__ = ["scan"]
