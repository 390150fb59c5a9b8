"""``zcraq client``: read, write and inspect the chain, for people and for scripts.

Every option of the group (--config, -c/--coordinator, -n/--node, -t/--timeout, --json) is also
an option of every subcommand, so it may come before or after the subcommand; the subcommand's
value wins.

Output. ``read`` prints the value as UTF-8 text and a newline (a value that is not UTF-8 is shown
with its bad bytes as \\xNN escapes); ``read --raw`` writes exactly the stored bytes. With
``--json`` every command prints one JSON object on stdout, also when it fails:
``{"error": CODE, "message": TEXT}``, where CODE is a wire error code (not_found, unavailable,
timeout, unknown_outcome, too_large, bad_request, forbidden, unauthenticated, internal) or usage
or interrupted; nothing goes to stderr then.

Exit codes: zcraq/exit_codes.py (0 success, 1 not found, 2 usage, 3 unavailable or timeout, 4
outcome unknown, 5 refused, 6 authentication failed, 7 other, 130 interrupted); ``--help`` lists them.

``status`` exits 0 when the coordinator answered, even if a node did not (its row says
unreachable); ``health`` exits 0 only when every member serves. In a partitioned cluster both
report per node, from the coordinator's partition table and each node's replicas; ``partitions``
lists every partition's chain (a one-chain cluster has one, partition 0).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from zcraq import exit_codes
from zcraq.chain_report import gather
from zcraq.client import ZClient
from zcraq.clientcore import ReadMode
from zcraq.clientroutes import NodeShare, PartitionTable, single
from zcraq.config import MAX_VALUE_BYTES, default_coordinator_endpoint
from zcraq.endpoints import parse_endpoint
from zcraq.errors import BadRequest, ConditionFailed, KeyNotFound, Timeout, Unavailable, ZcraqError
from zcraq.toml_tables import ConfigError
from zcraq.value_input import ValueInput, ValueInputError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Settings:
    """The shared options, wherever on the command line they were given."""

    config: str | None = None
    coordinator: str | None = None
    node: str | None = None
    timeout: float | None = None
    json: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command that succeeded (or, for health, answered) prints, and its exit code."""

    data: dict[str, Any] | list[Any]  # for --json
    text: bytes  # for a person, newline included
    exit_code: int = exit_codes.SUCCESS
    streamed: bool = False  # printed already, as it came (watch): nothing more to print


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a shared option's value; given again later (after the subcommand), it wins."""
    settings = ctx.ensure_object(Settings)
    if value is not None and value is not False:
        setattr(settings, param.name or "", value)


def shared_options(command: F) -> F:
    """The options the group and every subcommand take (each application makes new Options)."""
    options = [
        click.option("--config", default=None, type=click.Path(dir_okay=False), expose_value=False,
                     callback=_remember, help="Client config file: coordinator, timeout and the CURVE keys "
                                              "of a secured cluster."),
        click.option("-c", "--coordinator", default=None, metavar="ENDPOINT", expose_value=False,
                     callback=_remember, help="Coordinator endpoint, tcp://HOST:PORT (default: the config "
                                              "file's, else $ZCRAQ_COORDINATOR, else tcp://127.0.0.1:7000)."),
        click.option("-n", "--node", default=None, metavar="NODE", expose_value=False, callback=_remember,
                     help="A node id or service endpoint: read asks it (default: spread over all nodes); "
                          "status and health report only it; write and delete always go to the head."),
        click.option("-t", "--timeout", default=None, type=click.FloatRange(min=0.1), metavar="SECONDS",
                     expose_value=False, callback=_remember,
                     help="Seconds to wait for an answer, retries included (default: the config file's, else 5)."),
        click.option("--json", "json", is_flag=True, default=False, expose_value=False, callback=_remember,
                     help="Print one JSON object, also for an error: {\"error\": CODE, \"message\": TEXT}."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# ------------------------------------------------------------------------------------- group


_JSON_ANYWHERE = "zcraq.client.json"


def _asks_for_json(args: list[str]) -> bool:
    options = args[:args.index("--")] if "--" in args else args
    return "--json" in options


class _ClientGroup(click.Group):
    """A group whose usage errors are JSON objects too when --json is anywhere on the line
    (click reports them before any command runs, so the option itself may not be parsed yet)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        wants_json = _asks_for_json(args)
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            if wants_json:
                _fail_json(error)
            raise
        ctx.meta[_JSON_ANYWHERE] = wants_json
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            if ctx.meta.get(_JSON_ANYWHERE):
                _fail_json(error)
            raise


@click.group(cls=_ClientGroup, help=f"""Read, write and inspect the chain.

Options go before or after the subcommand: "zcraq client -n node2 read k" and "zcraq client read
k -n node2" are the same; given in both places, the subcommand's wins. With --json every command
prints one JSON object on stdout, errors included ({{"error": CODE, "message": TEXT}}).

{exit_codes.help_table()}
""")
@shared_options
def client() -> None:
    pass


# ------------------------------------------------------------------------------------- running


def _emit(settings: Settings, outcome: Outcome) -> NoReturn:
    out = sys.stdout.buffer
    if not outcome.streamed:
        out.write(_json_bytes(outcome.data) if settings.json else outcome.text)
    out.flush()
    sys.exit(outcome.exit_code)


def json_line(data: dict[str, Any]) -> bytes:
    """One JSON object on a line of its own (streamed output)."""
    return _json_bytes(data)


def _json_bytes(data: dict[str, Any] | list[Any]) -> bytes:
    # A path given on the command line may hold undecodable bytes: escaped, never a crash.
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"


def _describe(error: BaseException) -> str:
    if isinstance(error, click.ClickException):
        return error.format_message()
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return str(error) or type(error).__name__


def _fail_json(error: BaseException) -> NoReturn:
    report: dict[str, Any] = {"error": exit_codes.error_code_for(error), "message": _describe(error)}
    if isinstance(error, ConditionFailed) and error.version is not None:
        report["version"] = error.version  # the key's current version
    sys.stdout.buffer.write(_json_bytes(report))
    sys.stdout.flush()
    raise click.exceptions.Exit(exit_codes.exit_code_for(error))


def _fail(settings: Settings, error: BaseException) -> NoReturn:
    if settings.json:
        _fail_json(error)
    click.echo(f"error: {_describe(error)}", err=True)
    sys.exit(exit_codes.exit_code_for(error))


def _open(settings: Settings) -> ZClient:
    """The client the options describe; a config or endpoint that cannot be used is a usage error."""
    try:
        zclient = ZClient(settings.coordinator or (None if settings.config else default_coordinator_endpoint()),
                          timeout=settings.timeout, config=settings.config)
        if settings.node and settings.node.startswith("tcp://"):
            parse_endpoint(settings.node)
    except (ConfigError, BadRequest, ValueError) as error:
        raise click.UsageError(str(error)) from None
    return zclient


def run_action(settings: Settings, action: Callable[[ZClient], Outcome]) -> NoReturn:
    """Open a client, run ``action`` with it, print what it returns or the error it raised."""
    try:
        with _open(settings) as zclient:
            outcome = action(zclient)
    except click.ClickException:
        raise  # usage errors: click prints them (the group turns them into JSON with --json)
    except KeyboardInterrupt as error:
        _fail(settings, error)
    except Exception as error:  # noqa: BLE001 - every failure ends in its exit code, never a traceback
        _fail(settings, error)
    _emit(settings, outcome)


def shown_value(value: bytes) -> tuple[str | None, bytes]:
    """A value as text when it is UTF-8 (else None), and as shown to a person: its bad bytes
    escaped (\\xNN)."""
    try:
        return value.decode("utf-8"), value
    except UnicodeDecodeError:
        return None, value.decode("utf-8", "backslashreplace").encode()


def value_json(value: bytes, text: str | None) -> dict[str, Any]:
    return {"value": text, "value_base64": base64.b64encode(value).decode("ascii")}


def key_argument(_ctx: click.Context, _param: click.Parameter, key: str) -> str:
    """Keys travel in JSON headers: a non-empty UTF-8 string."""
    if not key:
        raise click.BadParameter("must not be empty")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise click.BadParameter("must be UTF-8 text") from None
    return key


# ------------------------------------------------------------------------------------- commands

def read_mode_options(command: F) -> F:
    """--mode and --max-staleness, for the commands that read values."""
    command = click.option(
        "--max-staleness", type=click.FloatRange(0, 3600), default=None, metavar="SECONDS",
        help="With --mode bounded: how old the value may be, at most (default 1).")(command)
    return click.option(
        "--mode", type=click.Choice(["strong", "eventual", "bounded"]), default="strong", show_default=True,
        help="strong: linearizable; eventual: the newest version committed at the node asked; bounded: a "
             "value still the committed one at most --max-staleness seconds before the node answered.")(command)


def read_mode(mode: str, max_staleness: float | None) -> ReadMode:
    if max_staleness is not None and mode != "bounded":
        raise click.UsageError("--max-staleness needs --mode bounded")
    return ReadMode.of(mode, max_staleness)


IF_VERSION = click.option(
    "--if-version", type=click.IntRange(0, 2**64 - 1), default=None, metavar="N",
    help="Only if KEY's current version is N (0: only if KEY has no value); otherwise nothing is "
         "written and the exit code is 8 (JSON: \"error\": \"condition_failed\" with the current \"version\").")


@client.command("write")
@click.argument("key", callback=key_argument)
@click.argument("value")
@click.option("--literal", is_flag=True, help="Store VALUE as given, even if it is - or starts with @.")
@IF_VERSION
@shared_options
@click.pass_obj
def write(settings: Settings, key: str, value: str, literal: bool, if_version: int | None) -> None:
    """Write VALUE under KEY and print the committed version.

    VALUE: - reads standard input, @PATH reads the file PATH (both in binary, up to the
    cluster's max_value_bytes); anything else is stored as given. JSON: {"key": KEY, "version": N}.
    """
    try:
        source = ValueInput(value, literal=literal)
    except ValueInputError as error:
        raise click.BadParameter(str(error), param_hint="VALUE") from None

    def action(zclient: ZClient) -> Outcome:
        try:
            zclient.topology()  # the cluster's limits, so that an oversized value is refused before sending
            limits = zclient.limits
            data = source.read(limits.max_value_bytes if limits else MAX_VALUE_BYTES)
        except Timeout:
            raise Unavailable(f"the coordinator {zclient.coordinator} did not answer within {zclient.timeout:g}s; "
                              "the write was not sent") from None
        except ValueInputError as error:
            raise click.BadParameter(str(error), param_hint="VALUE") from None
        finally:
            source.close()
        version = zclient.write(key, data, if_version=if_version)
        return Outcome({"key": key, "version": version}, f"ok version {version}\n".encode())

    run_action(settings, action)


@client.command("read")
@click.argument("key", callback=key_argument)
@read_mode_options
@click.option("--raw", is_flag=True, help="Write exactly the stored bytes: no newline, no escaping.")
@shared_options
@click.pass_obj
def read(settings: Settings, key: str, mode: str, max_staleness: float | None, raw: bool) -> None:
    """Print the committed value of KEY.

    As UTF-8 text and a newline; a value that is not UTF-8 with its bad bytes escaped (\\xNN).
    JSON: {"key": KEY, "version": N, "value": TEXT or null when not UTF-8, "value_base64": B64}.
    """
    if raw and settings.json:
        raise click.UsageError("--raw and --json exclude each other")
    how = read_mode(mode, max_staleness)

    def action(zclient: ZClient) -> Outcome:
        try:
            value, version = zclient.read_versioned(key, settings.node, mode=how.mode, max_staleness=how.seconds)
        except KeyNotFound:
            raise KeyNotFound(f"key {key!r} does not exist") from None
        text, shown = shown_value(value)
        return Outcome({"key": key, "version": version, **value_json(value, text)},
                       value if raw else shown + b"\n")

    run_action(settings, action)


@client.command("delete")
@click.argument("key", callback=key_argument)
@IF_VERSION
@shared_options
@click.pass_obj
def delete(settings: Settings, key: str, if_version: int | None) -> None:
    """Delete KEY and say whether it existed.

    Prints "ok version N (deleted)" or "ok version N (did not exist)": a deletion is a version
    either way. JSON: {"key": KEY, "version": N, "existed": true or false}.
    """
    def action(zclient: ZClient) -> Outcome:
        version, existed = zclient.delete_and_report(key, if_version=if_version)
        return Outcome({"key": key, "version": version, "existed": existed},
                       f"ok version {version} ({'deleted' if existed else 'did not exist'})\n".encode())

    run_action(settings, action)


@client.command("status")
@shared_options
@click.pass_obj
def status(settings: Settings) -> None:
    """Show every node as it reports itself.

    A row per member and for the learner: position, id, role, serving, lease left, caught up,
    epoch, writes in flight (SENT), the reads, writes and commits counters, service endpoint; the
    other counters that are not zero below it. A node that does not answer gets a row saying
    unreachable, and the command still exits 0: it fails only when the coordinator does not
    answer. JSON: {"coordinator": {...}, "epoch": N, "nodes": [...]} (README: Command line).

    A partitioned cluster: a row per node of its share of the partitions (heads, tails, replicas,
    learners and retiring: the two ends of moves under way, assigned), zone, draining, and how many
    of its replicas serve.
    JSON: {"coordinator": {...}, "table_version": N, "partitions": P, "nodes": [...]}.
    """
    def action(zclient: ZClient) -> Outcome:
        table = zclient.partition_table()
        if table is not None:
            return _partitioned_status(zclient, table, settings.node)
        report = gather(zclient, settings.node)
        return Outcome(report.status_json(), "".join(f"{line}\n" for line in report.status_lines()).encode())

    run_action(settings, action)


@client.command("health")
@shared_options
@click.pass_obj
def health(settings: Settings) -> None:
    """Check that every member serves: exit 0 if so, else 3.

    Prints a line per node that does not serve (unreachable, or why not), or one line saying
    the chain is healthy. A chain without members is not healthy; the learner is not judged (it serves no reads until
    it is a member) unless -n names it. The coordinator is asked, then all nodes at once, each
    wait bounded by --timeout. JSON: {"healthy": BOOL, "epoch": N, "problems": [...],
    "nodes": [...]}. A partitioned cluster is healthy when every partition has members and each
    member replica serves; JSON then has "table_version" instead of "epoch".
    """
    def action(zclient: ZClient) -> Outcome:
        table = zclient.partition_table()
        if table is not None:
            return _partitioned_health(zclient, table, settings.node)
        report = gather(zclient, settings.node, with_coordinator=False)
        healthy = not report.problems()
        return Outcome(report.health_json(), "".join(f"{line}\n" for line in report.health_lines()).encode(),
                       exit_codes.SUCCESS if healthy else exit_codes.UNAVAILABLE)

    run_action(settings, action)


@click.command("partitions")
@shared_options
@click.pass_obj
def partitions(settings: Settings) -> None:
    """List every partition's chain, head first, as the coordinator sees it.

    A row per partition: its number, epoch, chain (head first), learner (a replica being added),
    the node assigned to join it and the members retiring from it (on their way out). A one-chain
    cluster has one, partition 0. JSON: a list, [{"partition": N, "chain": [NODE, ...], "epoch": E,
    "learner": NODE or null, "assigned": NODE or null, "retiring": [NODE, ...]}, ...].
    """
    def action(zclient: ZClient) -> Outcome:
        table = zclient.partition_table()
        shown = table or single(zclient.topology())
        rows = [entry.to_json() for entry in shown.partitions]
        lines = _columns([("PARTITION", "EPOCH", "CHAIN", "LEARNER", "ASSIGNED", "RETIRING")] + [
            (str(row["partition"]), str(row["epoch"]), ",".join(row["chain"]) or "-", row["learner"] or "-",
             row["assigned"] or "-", ",".join(row["retiring"]) or "-") for row in rows])
        if table is not None:
            lines.append(f"{table.count} partitions, table version {table.version}")
        return Outcome(rows, "".join(f"{line}\n" for line in lines).encode())

    run_action(settings, action)


# ------------------------------------------------------------------------------------- partitioned


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _shares(zclient: ZClient, table: PartitionTable,
            node: str | None) -> list[tuple[NodeShare, dict[str, Any] | ZcraqError | None]]:
    """Each node's share of the table (or only ``node``'s) and its own status, asked of all at once
    (None: no endpoint known, it is in no chain)."""
    shares = table.shares()
    if node is not None:
        shares = [share for share in shares if node in (share.id, share.service)]
        if not shares:
            raise Unavailable(f"no node {node!r} in the partition table version {table.version}")
    answers = zclient.statuses([share.service for share in shares if share.service])
    return [(share, answers[share.service] if share.service else None) for share in shares]


def _serving(status: dict[str, Any] | ZcraqError | None) -> dict[int, bool]:
    """Whether each replica a node reported serves, by partition."""
    if not isinstance(status, dict):
        return {}
    return {r["partition"]: bool(r.get("serving")) for r in status.get("replicas") or ()
            if isinstance(r, dict) and isinstance(r.get("partition"), int)}


def _partitioned_status(zclient: ZClient, table: PartitionTable, node: str | None) -> Outcome:
    coordinator_status = zclient.status()
    rows: list[tuple[str, ...]] = [("NODE", "ZONE", "HEADS", "TAILS", "REPLICAS", "LEARNERS", "ASSIGNED", "RETIRING",
                                    "DRAINING", "SERVING", "SERVICE")]
    nodes: list[dict[str, Any]] = []
    notes: list[str] = []
    for share, status in _shares(zclient, table, node):
        serving = _serving(status)
        reachable = isinstance(status, dict)
        error = status if isinstance(status, ZcraqError) else None
        nodes.append({"id": share.id, "zone": share.zone, "draining": share.draining, "service": share.service,
                      "heads": share.heads, "tails": share.tails, "replicas": share.replicas,
                      "learners": share.learners, "assigned": share.assigned, "retiring": share.retiring,
                      "reachable": reachable,
                      "serving": sum(serving.values()) if reachable else None,
                      "counters": status.get("counters") if isinstance(status, dict) else None,
                      "error": None if error is None else {"error": exit_codes.error_code_for(error),
                                                           "message": str(error)}})
        shown = f"{sum(serving.values())}/{len(serving)}" if reachable else "unreachable" if error else "-"
        rows.append((share.id, share.zone or "-", str(share.heads), str(share.tails), str(share.replicas),
                     str(share.learners), str(share.assigned), str(share.retiring), "yes" if share.draining else "no",
                     shown,
                     share.service or "-"))
        if error is not None:
            notes.append(f"{share.id}: {error}")
    lines = _columns(rows) + notes
    lines.append(f"coordinator {zclient.coordinator}: {table.count} partitions, table version {table.version}")
    coordinator: dict[str, Any] = {"endpoint": zclient.coordinator, "counters": coordinator_status.get("counters")}
    return Outcome({"coordinator": coordinator, "table_version": table.version, "partitions": table.count,
                    "nodes": nodes}, "".join(f"{line}\n" for line in lines).encode())


def _partitioned_health(zclient: ZClient, table: PartitionTable, node: str | None) -> Outcome:
    problems = [f"partition {entry.partition} has no members at epoch {entry.topology.epoch}"
                for entry in table.partitions if not entry.topology.members and node is None]
    nodes: list[dict[str, Any]] = []
    for share, status in _shares(zclient, table, node):
        serving = _serving(status)
        member_of = [entry.partition for entry in table.partitions if entry.topology.position(share.id) is not None]
        if isinstance(status, ZcraqError):
            problem: str | None = f"unreachable: {status}"
        else:
            idle = [p for p in member_of if not serving.get(p)]
            problem = f"not serving partitions {', '.join(map(str, idle))}" if idle else None
        if problem is not None and (member_of or node is not None):
            problems.append(f"{share.id} ({share.service or '-'}): {problem}")
        nodes.append({"id": share.id, "service": share.service, "serving": problem is None, "problem": problem})
    healthy = not problems
    lines = problems or [f"healthy: {table.count} partitions served at table version {table.version}"]
    return Outcome({"healthy": healthy, "table_version": table.version, "problems": problems, "nodes": nodes},
                   "".join(f"{line}\n" for line in lines).encode(),
                   exit_codes.SUCCESS if healthy else exit_codes.UNAVAILABLE)


__all__ = ["client", "Settings", "Outcome", "partitions", "shared_options", "run_action", "key_argument",
           "shown_value", "value_json"]
