"""``zcraq client read-many / write-many / delete-many``: many keys in one command, carried by the
batched requests (PROTOCOL.md §8.8), so each request holds up to 1,000 keys.

Each key is reported on its own line (or in the JSON ``keys`` array, in the order given). The exit
code is that of the worst key: 0 when every key succeeded; read-many 1 when some key does not
exist; write-many and delete-many 4 when some key's outcome is unknown, 3 when some key was not
sent. A failure of the whole command (no head, refused, usage) exits as the single commands do.
"""

from __future__ import annotations

from typing import Any

import click

from zcraq import exit_codes
from zcraq.cli_client import (Outcome, Settings, key_argument, partitions, read_mode, read_mode_options,
                              run_action, shared_options, shown_value, value_json)
from zcraq.client import ZClient
from zcraq.config import MAX_VALUE_BYTES
from zcraq.errors import BatchFailed, Timeout, Unavailable, ZcraqError
from zcraq.value_input import STDIN, ValueInput, ValueInputError


def _keys(ctx: click.Context, param: click.Parameter, keys: tuple[str, ...]) -> list[str]:
    return [key_argument(ctx, param, key) for key in keys]


def _pairs(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    if len(pairs) % 2:
        raise click.BadParameter("takes KEY VALUE pairs: the last KEY has no VALUE")
    return [(key_argument(ctx, param, key), value) for key, value in zip(pairs[::2], pairs[1::2])]


@click.command("read-many")
@click.argument("keys", nargs=-1, required=True, callback=_keys)
@read_mode_options
@shared_options
@click.pass_obj
def read_many(settings: Settings, keys: list[str], mode: str, max_staleness: float | None) -> None:
    """Print the committed values of KEYS, a line per key: "KEY: VALUE", or "KEY (not found)".

    Values are shown as by read (bad UTF-8 escaped); exit 1 when some key does not exist. JSON:
    {"keys": [{"key": KEY, "version": N, "value": TEXT or null, "value_base64": B64}, or
    {"key": KEY, "error": "not_found"}, ...]}.
    """
    how = read_mode(mode, max_staleness)

    def action(zclient: ZClient) -> Outcome:
        found = zclient.read_many_versioned(keys, settings.node, mode=how.mode, max_staleness=how.seconds)
        rows: list[dict[str, Any]] = []
        lines: list[bytes] = []
        for key, result in zip(keys, found):
            if result is None:
                rows.append({"key": key, "error": "not_found"})
                lines.append(f"{key} (not found)\n".encode())
                continue
            value, version = result
            text, shown = shown_value(value)
            rows.append({"key": key, "version": version, **value_json(value, text)})
            lines.append(f"{key}: ".encode() + shown + b"\n")
        missing = any(result is None for result in found)
        return Outcome({"keys": rows}, b"".join(lines), exit_codes.NOT_FOUND if missing else exit_codes.SUCCESS)

    run_action(settings, action)


@click.command("write-many")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY VALUE [KEY VALUE]...", callback=_pairs)
@click.option("--literal", is_flag=True, help="Store every VALUE as given, even if it is - or starts with @.")
@shared_options
@click.pass_obj
def write_many(settings: Settings, pairs: list[tuple[str, str]], literal: bool) -> None:
    """Write each VALUE under its KEY and print each committed version, a line per key.

    VALUE as for write: - reads standard input (for one VALUE at most), @PATH the file PATH.
    The keys are written as by write, but not as one transaction. JSON: {"keys": [{"key": KEY,
    "version": N} or {"key": KEY, "error": CODE, "message": TEXT}, ...]}.
    """
    keys = [key for key, _ in pairs]
    arguments = [value for _, value in pairs]
    if not literal and arguments.count(STDIN) > 1:
        raise click.UsageError("standard input (-) can be the VALUE of one KEY only")
    try:
        sources = [ValueInput(argument, literal=literal) for argument in arguments]
    except ValueInputError as error:
        raise click.BadParameter(str(error), param_hint="VALUE") from None

    def action(zclient: ZClient) -> Outcome:
        try:
            zclient.topology()  # the cluster's limits, so that an oversized value is refused before sending
            limits = zclient.limits
            values = [source.read(limits.max_value_bytes if limits else MAX_VALUE_BYTES) for source in sources]
        except Timeout:
            raise Unavailable(f"the coordinator {zclient.coordinator} did not answer within {zclient.timeout:g}s; "
                              "nothing was sent") from None
        except ValueInputError as error:
            raise click.BadParameter(str(error), param_hint="VALUE") from None
        finally:
            for source in sources:
                source.close()
        try:
            versions: list[int | ZcraqError] = list(zclient.write_many(list(zip(keys, values))))
        except BatchFailed as failure:
            versions = failure.results
        return _report(keys, versions, [None] * len(keys))

    run_action(settings, action)


@click.command("delete-many")
@click.argument("keys", nargs=-1, required=True, callback=_keys)
@shared_options
@click.pass_obj
def delete_many(settings: Settings, keys: list[str]) -> None:
    """Delete KEYS, a line per key: its deletion's version and whether it existed.

    JSON: {"keys": [{"key": KEY, "version": N, "existed": BOOL} or {"key": KEY, "error": CODE,
    "message": TEXT}, ...]}.
    """
    def action(zclient: ZClient) -> Outcome:
        try:
            done = zclient.delete_many(keys)
            versions: list[int | ZcraqError] = [version for version, _ in done]
            existed: list[bool | None] = [had for _, had in done]
        except BatchFailed as failure:
            versions, existed = failure.results, failure.existed
        return _report(keys, versions, existed)

    run_action(settings, action)


def _report(keys: list[str], results: list[int | ZcraqError], existed: list[bool | None]) -> Outcome:
    """A line (and a JSON row) per key written or deleted; the exit code of the worst failure."""
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    worst = exit_codes.SUCCESS
    for key, result, had in zip(keys, results, existed):
        if isinstance(result, ZcraqError):
            rows.append({"key": key, "error": exit_codes.error_code_for(result), "message": str(result)})
            lines.append(f"{key} error: {result}\n")
            worst = max(worst, exit_codes.exit_code_for(result), key=_severity)
            continue
        row: dict[str, Any] = {"key": key, "version": result}
        note = ""
        if had is not None:
            row["existed"] = had
            note = " (deleted)" if had else " (did not exist)"
        rows.append(row)
        lines.append(f"{key} ok version {result}{note}\n")
    return Outcome({"keys": rows}, "".join(lines).encode(), worst)


def _severity(code: int) -> int:
    """Outcome unknown outranks every other failure: the caller must find out what happened."""
    return {exit_codes.SUCCESS: 0, exit_codes.OUTCOME_UNKNOWN: 9}.get(code, 5)


# For the client group (zcraq/cli.py adds them): the batch commands, and the partition listing.
COMMANDS = (read_many, write_many, delete_many, partitions)

__all__ = ["COMMANDS", "read_many", "write_many", "delete_many"]
