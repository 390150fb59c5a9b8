"""``zcraq client watch``: every committed change of a key or of the keys with a prefix, a line each
as it happens ("KEY@VERSION: VALUE", "KEY@VERSION deleted"), until --count changes or Ctrl-C.
Follows a node's change log and moves to another when it fails (PROTOCOL.md §8.10); in a
partitioned cluster a node of the key's partition, or of every partition for --prefix."""

from __future__ import annotations

import sys

import click

from zcraq.cli_client import Outcome, Settings, json_line, run_action, shared_options, shown_value, value_json
from zcraq.client import ZClient
from zcraq.clientwatch import DEFAULT_POLL_WAIT, Change


@click.command("watch")
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="Watch every key that begins with this (instead of KEY).")
@click.option("--since-version", type=click.IntRange(min=0), default=None,
              help="The changes after this version of each key (default: those after the watch starts).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many changes.")
@click.option("--poll-wait", type=click.FloatRange(0.0, 60.0), default=DEFAULT_POLL_WAIT, show_default=True,
              metavar="SECONDS", help="How long each poll waits at the node for a change.")
@shared_options
@click.pass_obj
def watch(settings: Settings, key: str | None, prefix: str | None, since_version: int | None, count: int | None,
          poll_wait: float) -> None:
    """Print each committed change of KEY (or of the keys beginning with --prefix) in version order
    per key. A change marked "(pruned)" follows versions no node it asked still kept: it is the
    key's value after them. JSON: one object per line, {"key", "version", "value", "value_base64",
    "deleted", "pruned"}.
    """
    if (key is None) == (prefix is None):
        raise click.UsageError("give a KEY or --prefix (one of them)")
    if key == "":
        raise click.BadParameter("must not be empty", param_hint="KEY")

    def action(zclient: ZClient) -> Outcome:
        out = sys.stdout.buffer
        for seen, change in enumerate(zclient.watch(key, prefix=prefix, since_version=since_version,
                                                    node=settings.node, poll_wait=poll_wait), start=1):
            out.write(json_line(_as_json(change)) if settings.json else _as_text(change))
            out.flush()
            if count is not None and seen >= count:
                break
        return Outcome({}, b"", streamed=True)

    run_action(settings, action)


def _as_text(change: Change) -> bytes:
    head = f"{change.key}@{change.version}".encode("utf-8", "backslashreplace")
    note = b" (pruned)" if change.pruned else b""
    if change.value is None:
        return head + b" deleted" + note + b"\n"
    return head + b": " + shown_value(change.value)[1] + note + b"\n"


def _as_json(change: Change) -> dict[str, object]:
    value = {"value": None, "value_base64": None} if change.value is None else \
        value_json(change.value, shown_value(change.value)[0])
    return {"key": change.key, "version": change.version, **value, "deleted": change.deleted,
            "pruned": change.pruned}


__all__ = ["watch"]
